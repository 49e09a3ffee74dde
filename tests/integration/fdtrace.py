#!/usr/bin/env python3
"""Check an strace log of one process for file-descriptor hygiene (used by test_env_fds.sh).

    fdtrace.py [--sanitizer-runtime] LOG

Fails (exit 1, one line per finding) when
  - a descriptor was created without close-on-exec (open without O_CLOEXEC, socket without
    SOCK_CLOEXEC, dup/dup2, pipe2 without O_CLOEXEC, ...): a child could inherit it;
  - a descriptor other than 0, 1, 2 that the process created was still open when it exited.
Descriptors the kernel always makes close-on-exec (pidfd_open, the namespace ioctls) are counted
as created and must be closed too. The log comes from strace without -f: one process.

--sanitizer-runtime: the binary is an ASan build. Its runtime reads /proc/self/maps and probes
memory through pipes with raw open() and pipe2(..., 0) calls of its own; glibc (so nsegress)
only ever uses openat and never calls pipe2 without flags, so those two forms are left out.
"""
import re
import sys

CLOEXEC_FLAG = {
    "open": "O_CLOEXEC", "openat": "O_CLOEXEC", "openat2": "O_CLOEXEC", "creat": None,
    "socket": "SOCK_CLOEXEC", "accept4": "SOCK_CLOEXEC", "accept": None,
    "dup": None, "dup2": None, "dup3": "O_CLOEXEC",
    "memfd_create": "MFD_CLOEXEC", "eventfd": None, "eventfd2": "EFD_CLOEXEC",
    "epoll_create": None, "epoll_create1": "EPOLL_CLOEXEC", "signalfd": None,
    "signalfd4": "SFD_CLOEXEC", "timerfd_create": "TFD_CLOEXEC", "inotify_init": None,
    "inotify_init1": "IN_CLOEXEC",
}
ALWAYS_CLOEXEC = {"pidfd_open", "pidfd_getfd"}
# ioctls that return a new descriptor: NS_GET_USERNS, NS_GET_PARENT, and pidfd's
# PIDFD_GET_*_NAMESPACE (type 0xff, shown undecoded by older strace).
NS_IOCTL = re.compile(r"NS_GET_USERNS|NS_GET_PARENT|_IOC\(_IOC_NONE, 0xff,")
CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")


def main(path, sanitizer_runtime):
    open_fds = {}
    findings = []
    for raw in open(path, encoding="utf-8", errors="replace"):
        line = raw.rstrip("\n")
        m = CALL.match(line)
        if not m:
            continue
        name, args, ret = m.group(1), m.group(2), int(m.group(3))
        if ret < 0:
            continue
        if sanitizer_runtime and (name == "open" or (name == "pipe2" and args.endswith(", 0"))):
            continue
        if name == "close":
            open_fds.pop(int(args.split(",")[0]), None)
            continue
        if name == "close_range" and "CLOSE_RANGE_CLOEXEC" not in args:
            lo, hi = (int(x, 0) for x in args.split(",")[:2])
            for fd in [f for f in open_fds if lo <= f <= hi]:
                del open_fds[fd]
            continue
        new = []
        cloexec = True
        if name in ("pipe", "pipe2", "socketpair"):
            pair = re.search(r"\[(\d+), (\d+)\]", args)
            if pair:
                new = [int(pair.group(1)), int(pair.group(2))]
            flag = {"pipe": None, "pipe2": "O_CLOEXEC", "socketpair": "SOCK_CLOEXEC"}[name]
            cloexec = flag is not None and flag in args
        elif name in CLOEXEC_FLAG:
            new = [ret]
            flag = CLOEXEC_FLAG[name]
            cloexec = flag is not None and flag in args
        elif name in ALWAYS_CLOEXEC:
            new = [ret]
        elif name == "fcntl" and ("F_DUPFD" in args):
            new = [ret]
            cloexec = "F_DUPFD_CLOEXEC" in args
        elif name == "ioctl" and NS_IOCTL.search(args):
            new = [ret]
        for fd in new:
            open_fds[fd] = line
            if not cloexec:
                findings.append(f"created without close-on-exec: {line}")
    for fd, line in sorted(open_fds.items()):
        if fd > 2:
            findings.append(f"fd {fd} still open at exit, created by: {line}")
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    argv = sys.argv[1:]
    runtime = "--sanitizer-runtime" in argv
    argv = [a for a in argv if a != "--sanitizer-runtime"]
    if len(argv) != 1:
        sys.exit(__doc__)
    sys.exit(main(argv[0], runtime))
