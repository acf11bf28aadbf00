"""``dagcache demo``: the real local stack (:mod:`proxy.demo.stack`) or the quick stand-in
(:mod:`proxy.demo.standin`)."""

from proxy.errors import ProxyError


class DemoError(ProxyError):
    """The demo cannot start or clean up; ``str(exc)`` is the one-line reason for the user."""
