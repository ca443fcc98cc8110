"""Following Postfix's log (hook.peers.maillog): a file across rotation, truncation and
restarts; the systemd journal (a real journald in a namespace of its own) with a cursor."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hook.peers.maillog import Choice, FileFollower, JournalFollower, LogError, choose, read_recent
from hook.peers.tlslog import Failure, Level, TlsEvent
from tests.harness.journal import JOURNALD, running_journald

L = "Dec  2 03:17:40 mx postfix/smtpd[{n}]: SSL_accept error from unknown[192.0.2.{n}]: -1\n"


def lines(*ns: int) -> str:
    return "".join(L.format(n=n) for n in ns)


def ids(got: list[str]) -> list[int]:
    return [int(g.split("[")[1].split("]")[0]) for g in got]


def test_file_rotation_truncation_and_restart(tmp_path: Path) -> None:
    """Lines written to the old file after a rename are read before the new file's; a
    truncated file is read again from its start; a restart resumes at the saved position,
    even when the file was rotated while we were stopped. No line is lost or repeated."""
    log = tmp_path / "mail.log"
    log.write_text(lines(1, 2))
    f = FileFollower(log, first_tail=1 << 20)
    assert ids(f.read()) == [1, 2]
    with log.open("a") as w:
        w.write(lines(3) + "Dec  2 03:17:40 mx postfix/smtpd[4]: partial")
    assert ids(f.read()) == [3]  # the partial line waits for its newline
    os.rename(log, tmp_path / "mail.log.1")
    with (tmp_path / "mail.log.1").open("a") as w:  # Postfix still writes to the old inode
        w.write(": x\n" + lines(5))
    log.write_text(lines(6))
    got = f.read()
    assert ids(got) == [4, 5, 6] and f.rotations == 1
    log.write_text(lines(7))  # truncated in place (shorter than our offset)... and rewritten
    assert ids(f.read()) == [7] and f.truncations == 1
    saved = f.position
    f.close()
    with log.open("a") as w:
        w.write(lines(8))
    g = FileFollower(log, saved)
    assert ids(g.read()) == [8]
    saved = g.position
    g.close()
    with log.open("a") as w:
        w.write(lines(9))
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text(lines(10))
    h = FileFollower(log, saved)
    assert ids(h.read()) == [9, 10]
    h.close()


def test_file_first_read_starts_near_the_end(tmp_path: Path) -> None:
    """A big log seen for the first time: only its tail, from a line start; reads are bounded."""
    log = tmp_path / "mail.log"
    log.write_text(lines(*range(1, 201)))
    f = FileFollower(log, first_tail=len(L) * 10 + 5)
    assert ids(f.read()) == list(range(191, 201))
    with log.open("a") as w:
        w.write(lines(*range(201, 3001)))
    first = f.read(max_bytes=1)  # at least one read of 64 KiB, at most about that
    assert 500 <= len(first) < 1000
    assert ids(first + f.read()) == list(range(201, 3001))
    f.close()


def test_fifo_and_directory_are_refused_without_hanging(tmp_path: Path) -> None:
    """A FIFO (nobody writing) at the log path is an error at once, not a hang."""
    fifo = tmp_path / "mail.log"
    os.mkfifo(fifo)
    done = threading.Event()

    def attempt() -> None:
        with pytest.raises(LogError, match="not a regular file"):
            FileFollower(fifo).read()
        done.set()

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(5)
    assert done.is_set()
    with pytest.raises(LogError, match="not a regular file"):
        FileFollower(tmp_path).read()


def test_choose_the_source(tmp_path: Path) -> None:
    """maillog_file first, then the usual files, then the journal; config overrides all."""
    mail = tmp_path / "mail.log"
    assert choose("auto", None, "/x/maillog").path == Path("/x/maillog")
    assert choose("auto", None, "", candidates=[mail], journal_present=True).kind == "journal"
    mail.write_text("")
    assert choose("auto", None, "", candidates=[mail]).path == mail
    assert choose("auto", None, "/dev/stdout", candidates=[], journal_present=False).kind == "none"
    assert choose("journal", None, "/x/maillog").kind == "journal"
    assert choose("off", mail, "").kind == "none"
    assert choose("file", None, "", candidates=[]).kind == "none"
    assert read_recent(Choice("none"), 0.0) == []


needs_journald = pytest.mark.skipif(os.geteuid() != 0 or not JOURNALD.exists(),
                                    reason="needs root and systemd-journald")


@needs_journald
def test_journal_cursor_neither_loses_nor_repeats() -> None:
    """Entries of Postfix's syslog identifiers are read, others ignored; a follower made
    again from the saved cursor (a restart) sees exactly the entries sent since; a bounded
    read leaves the rest for the next one."""
    fixture = (Path(__file__).parent / "fixtures" / "maillog-tls.txt").read_text().splitlines()
    with running_journald() as j:
        for line in fixture[:4]:  # real Postfix lines, as Postfix would send them to syslog
            head, _, message = line.partition("]: ")
            ident, _, pid = head.split(" ")[-1].partition("[")
            j.send(message, ident, int(pid))
        j.send("Anonymous TLS connection established from x[192.0.2.1]: TLSv1.3 with cipher A",
               "sshd", 7)
        j.sync()
        f = JournalFollower(directory=j.directory, since="-1h")
        first = f.read()
        assert [e.failure or e.level for e in first] == [
            Failure.HANDSHAKE, Level.ANONYMOUS, Level.ANONYMOUS, Failure.HANDSHAKE]
        assert first[0].pid == int(fixture[0].split("[")[1].split("]")[0])
        cursor = f.cursor
        assert cursor
        assert f.read() == []  # nothing new
        for n in range(5):
            j.send(f"lost connection after STARTTLS from unknown[192.0.2.{n}]", "postfix/smtpd", 100 + n)
        j.send(b"SSL_accept error from bad\xff[192.0.2.9]: -1", "postfix/smtpd", 99)
        j.sync()
        again = JournalFollower(cursor, directory=j.directory)
        part = again.read(max_entries=2)
        rest = again.read()
        got = part + rest
        assert [e.address for e in got] == [f"192.0.2.{n}" for n in range(5)] + ["192.0.2.9"]
        assert len(part) == 2 and "\ufffd" in got[-1].host
        gone = JournalFollower("s=0;i=1;b=0;m=1;t=1;x=1", directory=j.directory, since="-1h")
        assert len(gone.read()) == len(first) + len(got) and gone.cursor_lost == 1  # vacuumed


def test_journal_missing_journalctl() -> None:
    with pytest.raises(LogError, match="not found"):
        JournalFollower(journalctl="/nonexistent/journalctl").read()


def test_short_append_is_not_taken_for_a_truncation(tmp_path: Path) -> None:
    """New data shorter than the 64-byte mark (one short line) is read alone: the mark
    kept is the full 64 bytes before the offset, so the next check does not take the
    file for rewritten and read (and count) everything again; nor after a restart. A
    line too long to keep moves the mark too."""
    log = tmp_path / "mail.log"
    log.write_text(lines(1, 2))
    f = FileFollower(log, first_tail=1 << 20)
    assert ids(f.read()) == [1, 2]
    with log.open("a") as w:
        w.write("short\n")
    assert f.read() == ["short"]
    with log.open("a") as w:
        w.write("x\n")
    assert f.read() == ["x"]
    assert f.read() == [] and f.truncations == 0
    saved = f.position
    f.close()
    with log.open("a") as w:
        w.write("y\n")
    g = FileFollower(log, saved)
    assert g.read() == ["y"] and g.truncations == 0
    with log.open("a") as w:  # over a read's size, no newline yet: skipped, not waited for
        w.write("z" * ((1 << 20) + 10))
    assert g.read() == [] and g.truncations == 0
    with log.open("a") as w:
        w.write("\n" + lines(3))
    assert ids(g.read()[-1:]) == [3] and g.truncations == 0
    g.close()


def test_journalctl_writing_much_to_stderr_does_not_hang_us(tmp_path: Path) -> None:
    """journalctl's stderr is not a pipe left undrained: a journalctl (here a script in its
    place) that writes 1 MiB of warnings before its entries is read to its end, and the
    start of its stderr is still in the error when it fails."""
    entry = ('{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1800000000000000","SYSLOG_IDENTIFIER":'
             '"postfix/smtpd","SYSLOG_PID":"7","MESSAGE":"SSL_accept error from x[192.0.2.1]: -1"}')
    tool = tmp_path / "journalctl"
    tool.write_text("#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\0' w >&2\n"
                    f"echo '{entry}'\n")
    tool.chmod(0o755)
    got: list[list[TlsEvent]] = []
    t = threading.Thread(target=lambda: got.append(JournalFollower(journalctl=str(tool)).read()),
                         daemon=True)
    t.start()
    t.join(20)
    assert got and [e.address for e in got[0]] == ["192.0.2.1"]
    tool.write_text("#!/bin/sh\necho 'Failed to open: no such file' >&2\nexit 1\n")
    with pytest.raises(LogError, match="exited 1: Failed to open"):
        JournalFollower(journalctl=str(tool)).read()
