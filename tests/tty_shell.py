#!/usr/bin/env python3
"""An operator at a terminal, for the tests: runs an interactive `sh -i` on a fresh pty
(its session leader, the pty its controlling terminal) and types into it, in order:

  !LINE        a shell command line (followed by `echo __rc=$?__`; not waited for)
  ?REGEX       wait until REGEX appears in what the terminal shows after the last wait
  =ROWSxCOLS   set the terminal's window size (the foreground job gets SIGWINCH)
  TEXT         raw input, TEXT and a newline

then `exit`, and prints everything the terminal showed. Exit status 0, or 124 when a
wait or the shell's exit took longer than TIMEOUT seconds.

usage: tty_shell.py TIMEOUT STEP...
"""
import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time


def main():
    timeout = float(sys.argv[1])
    steps = sys.argv[2:]
    env = dict(os.environ, PS1="$ ", ENV="")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe("sh", ["sh", "-i"], env)
    shown = b""
    mark = 0

    def pump(until):
        nonlocal shown
        while time.monotonic() < until:
            r, _, _ = select.select([fd], [], [], 0.05)
            if not r:
                return True
            try:
                data = os.read(fd, 65536)
            except OSError:
                return False
            if not data:
                return False
            shown += data
        return True

    def wait_for(regex, deadline):
        nonlocal mark
        pattern = re.compile(regex.encode())
        while time.monotonic() < deadline:
            m = pattern.search(shown, mark)
            if m:
                mark = m.end()
                return True
            if not pump(time.monotonic() + 0.2):
                m = pattern.search(shown, mark)
                if m:
                    mark = m.end()
                return bool(m)
        return False

    status = 0
    deadline = time.monotonic() + timeout
    for step in steps:
        if step.startswith("!"):
            os.write(fd, step[1:].encode() + b"; echo __rc=$?__\n")
        elif step.startswith("?"):
            if not wait_for(step[1:], deadline):
                shown += ("\n[tty_shell: timed out waiting for %r]\n" % step[1:]).encode()
                status = 124
                break
        elif step.startswith("="):
            rows, cols = (int(x) for x in step[1:].split("x"))
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        else:
            os.write(fd, step.encode() + b"\n")
        pump(time.monotonic() + 0.05)
    if status == 0:
        os.write(fd, b"exit\n")
    end = time.monotonic() + (timeout if status == 0 else 1)
    while time.monotonic() < end:
        if not pump(time.monotonic() + 0.2):
            break
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            pump(time.monotonic() + 0.2)
            break
    else:
        status = status or 124
    try:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
    sys.stdout.write(shown.decode(errors="replace").replace("\r", ""))
    sys.exit(status)


if __name__ == "__main__":
    main()
