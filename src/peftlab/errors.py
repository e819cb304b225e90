"""The one exception type users see as a one-line message instead of a traceback."""


class PeftlabError(Exception):
    """A problem the user can fix; the message names the key, its value and the way out."""
