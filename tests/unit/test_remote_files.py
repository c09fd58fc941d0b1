"""app.remote.files (pure: a stand-in SFTP client, no network): transfers on one
connection take turns, whatever threads ask for them."""
import threading
import time

from app.remote.files import SftpFiles


class _Handle:
    def __init__(self, sftp, path):
        self.sftp, self.path = sftp, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def chmod(self, mode):
        pass

    def set_pipelined(self, on):
        pass

    def write(self, data):
        self.sftp.enter()
        time.sleep(0.02)  # a slow request: a second thread would overlap here
        self.sftp.files[self.path] = bytes(data)
        self.sftp.leave()


class _Stat:
    def __init__(self, size):
        self.st_size = size


class _Sftp:
    """Counts how many threads are inside a request at once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.inside = self.most = 0
        self._count = threading.Lock()

    def enter(self):
        with self._count:
            self.inside += 1
            self.most = max(self.most, self.inside)

    def leave(self):
        with self._count:
            self.inside -= 1

    def mkdir(self, path, mode=0o777):
        pass

    def open(self, path, mode):
        return _Handle(self, path)

    def stat(self, path):
        return _Stat(len(self.files[path]))

    def posix_rename(self, a, b):
        self.files[b] = self.files.pop(a)

    def remove(self, path):
        self.files.pop(path, None)

    def rmdir(self, path):
        pass


class _Files(SftpFiles):
    def __init__(self):
        self._sftp_lock = threading.RLock()
        self.sftp = _Sftp()
        self.address = "test"
        self._transport = None

    def _sftp_client(self):
        return self.sftp


def test_uploads_from_several_threads_take_turns_on_one_connection():
    files = _Files()
    threads = [threading.Thread(target=files.put_file, args=(f"/d/f{i}", b"x" * i, 0o600))
               for i in range(1, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert files.sftp.most == 1  # never two requests at once
    assert {p: len(b) for p, b in files.sftp.files.items()} == {f"/d/f{i}": i for i in range(1, 7)}
