from cryptography.fernet import Fernet

from app.crypto import KeyRing


def test_newest_key_encrypts_and_old_keys_still_decrypt():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    ring = KeyRing()
    ring.configure([old])
    token = ring.encrypt("s3cret")
    ring.configure([new, old])
    assert ring.decrypt(token) == "s3cret"
    rotated = ring.rotate(token)
    ring.configure([new])
    assert ring.decrypt(rotated) == "s3cret"


def test_a_removed_key_gives_a_clear_error():
    ring = KeyRing()
    ring.configure([Fernet.generate_key().decode()])
    token = ring.encrypt("x")
    ring.configure([Fernet.generate_key().decode()])
    try:
        ring.decrypt(token)
    except RuntimeError as exc:
        assert "rotate-keys" in str(exc)
    else:
        raise AssertionError("decrypting with the wrong key must fail")


def test_empty_key_list_is_refused():
    ring = KeyRing()
    try:
        ring.configure([])
    except RuntimeError as exc:
        assert "KEYSTONE_ENCRYPTION_KEYS" in str(exc)
    else:
        raise AssertionError
