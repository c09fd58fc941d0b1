"""The environment blueprint object, shared by the page and its components' views."""
from flask import Blueprint

bp = Blueprint("environments", __name__, url_prefix="/environments")
