"""systemd's readiness protocol (``Type=notify``): one datagram to ``$NOTIFY_SOCKET``.

The deploy restarts a unit with ``systemctl restart``, which for a ``Type=notify`` service
returns only once the process said ``READY=1`` (and fails if it exits first): a worker that
crashes while starting fails its deploy's restart step instead of slipping past the health
check. Outside systemd (no ``$NOTIFY_SOCKET``) this does nothing.
"""

import os
import socket


def notify(message: str) -> None:
    """Send ``message`` (e.g. ``READY=1``) to systemd, if it is listening."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    # An abstract socket's name starts with '@' in the variable and NUL on the wire.
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
