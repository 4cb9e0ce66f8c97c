#!/usr/bin/env python3
"""Forwards TCP from this machine's loopback into a network namespace.

    netns-forward.py LOCAL_PORT NETNS TARGET_HOST TARGET_PORT

Listens on 127.0.0.1:LOCAL_PORT (0: any free port) in the namespace it starts in, prints the
port it got on one line of stdout, then moves into namespace NETNS (/run/netns/NETNS, as made
by `ip netns add`) and forwards every connection to TARGET_HOST:TARGET_PORT there
(TARGET_PORT 0: the same port as the one it got here).

Why one process that moves, and not `ip netns exec` per connection: the listening socket stays
in the machine's namespace (a socket keeps the namespace it was made in), while every
connection it makes is made inside NETNS, which has no route to the machine. Once moved, the
process is listed by `ip netns pids NETNS`, so whatever removes the namespace ends it too.
deploy/local-cluster.sh uses it for --http. Needs root (setns). Ends on SIGTERM or SIGINT.
"""
import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def enter_netns(name):
    fd = os.open(os.path.join("/run/netns", name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns(" + name + "): " + os.strerror(err))
    finally:
        os.close(fd)


def pump(src, dst):
    """Copies src to dst until EOF or an error, then passes the EOF on."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(client, target):
    with client:
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError as e:
            print("netns-forward: %s:%d: %s" % (target[0], target[1], e), file=sys.stderr)
            return
        with upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
            back.start()
            pump(client, upstream)
            back.join()


def main(argv):
    if len(argv) != 5:
        print("usage: netns-forward.py LOCAL_PORT NETNS TARGET_HOST TARGET_PORT", file=sys.stderr)
        return 2
    local_port, netns, host, port = int(argv[1]), argv[2], argv[3], int(argv[4])
    # SIGTERM ends the process at once (connections are daemon threads): no hang at teardown.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", local_port))
    except OSError as e:
        print("netns-forward: cannot listen on 127.0.0.1:%d: %s" % (local_port, e.strerror),
              file=sys.stderr)
        return 1
    listener.listen(64)
    got = listener.getsockname()[1]
    target = (host, port or got)
    enter_netns(netns)
    print(got, flush=True)  # ready: listening here, and in NETNS for what it connects to
    while True:
        client, _ = listener.accept()
        threading.Thread(target=serve, args=(client, target), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
