"""``renew-check`` as a Nagios plugin: status line, perfdata with range thresholds, exit
codes (UNKNOWN for usage and configuration errors), ``-w``/``-c`` in days or a share of
the lifetime, the command definitions shipped in docs/monitoring.md, and the import set
of the ``probe`` path (what a plugin pays on every start)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.renew_check import nagios
from hook.tls.judgement import Thresholds
from tests.harness import plugin_output
from tests.harness.plugin_output import PluginOutput, alerts, implied_state
from tests.harness.stack import DOMAIN, LO, Stack

BIN = Path(sys.executable).parent
RENEW_CHECK = BIN / "renew-check"
DOC = Path(__file__).resolve().parents[1] / "docs" / "monitoring.md"


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, PluginOutput, str]:
    """Run a plugin command line as Nagios does (a new process, no terminal)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    return proc.returncode, plugin_output.parse(proc.stdout), proc.stderr


def assert_consistent(rc: int, out: PluginOutput) -> None:
    """The exit code is the state the status line names, and no perfdata item's own
    thresholds call for a worse one."""
    assert rc == plugin_output.STATES[out.state], (rc, out)
    assert all(implied_state(p) <= rc for p in out.perfdata), out.perfdata


# ------------------------------------------------------------------ pure: format and ranges
def test_perfdata_items_follow_the_guidelines() -> None:
    """Labels with spaces are quoted (quotes doubled), units follow the value, and a
    lower limit is the ``N:`` range: an alert below N, never above."""
    item = nagios.perf("it's a days_left", 12.5, "", nagios.below(20), nagios.below(10), 0)
    assert item == "'it''s a days_left'=12.5;20:;10:;0;"
    [p] = plugin_output.parse(f"OK: x | {item}").perfdata
    assert (p.label, p.value, p.warn, p.crit, p.minimum) == ("it's a days_left", 12.5, "20:", "10:", 0)
    assert nagios.perf("time", 0.0042, "s", minimum=0) == "time=0.0042s;;;0;"
    assert alerts("20:", 12) and not alerts("20:", 25) and alerts("20", 25) and not alerts("20", 12)
    assert alerts("@10:20", 15) and not alerts("~:10", -5) and alerts("10:20", 21)


def test_the_reader_rejects_what_the_guidelines_forbid() -> None:
    """The test reader is strict: no state word, a bad unit or a bad range fail."""
    for bad in ("all fine", "OK: x | days=3d;;", "OK: x | days=3;20::;", "OK: x | a b=1"):
        with pytest.raises(plugin_output.FormatError):
            plugin_output.parse(bad)


@pytest.mark.parametrize(("text", "parsed"), [
    ("20", nagios.Threshold(days=20)), ("7.5", nagios.Threshold(days=7.5)),
    ("25%", nagios.Threshold(fraction=0.25)), (" 10 % ", nagios.Threshold(fraction=0.10)),
])
def test_threshold_syntax(text: str, parsed: nagios.Threshold) -> None:
    """``-w``/``-c``: days as check_ssl_cert takes them, or a share of the lifetime."""
    assert nagios.threshold(text) == parsed


@pytest.mark.parametrize("text", ["", "abc", "-3", "0%", "100%", "20d"])
def test_threshold_syntax_errors(text: str) -> None:
    """Malformed thresholds are argparse type errors (a usage error: UNKNOWN)."""
    with pytest.raises(argparse.ArgumentTypeError):
        nagios.threshold(text)


def test_days_replace_the_lifetime_share() -> None:
    """Days given with -w/-c are the limits for every lifetime; a critical alone pulls
    the warning up to it; shares still scale with the lifetime."""
    assert Thresholds(warning_at_days=20, critical_at_days=10).limits(90) == (20, 10)
    assert Thresholds(warning_at_days=20, critical_at_days=10).limits(6) == (20, 10)
    assert Thresholds(critical_at_days=40).limits(90) == (40, 40)
    assert Thresholds(warning_fraction=0.5).limits(90) == pytest.approx((45, 9))


# ------------------------------------------------------------------ usage errors: UNKNOWN
@pytest.mark.parametrize("argv", [
    ["--bogus"], ["probe"], ["probe", "--timeout", "soon", "x"], ["-w", "abc", "probe", "h"],
    ["probe", "h", "-c", "1%%"], ["probe", "h:25", "-w", "10", "-c", "20"],
    ["probe", "no-port:x"], ["--config", "/nonexistent/certwatch.toml", "probe", "h"],
    ["probe", "h", "--timeout", "-1"], ["adopt"],
])
def test_usage_and_configuration_errors_are_unknown(argv: list[str]) -> None:
    """Every usage or configuration error exits 3 with an ``UNKNOWN:`` status line on
    stdout (argparse's own exit 2 would show as CRITICAL in Nagios)."""
    rc, out, err = run([str(RENEW_CHECK), *argv], env={"POSTFIX_CERTWATCH_CONFIG": "/dev/null"})
    assert (rc, out.state) == (3, "UNKNOWN"), (rc, out, err)


def test_deploy_hook_usage_errors_keep_exit_2() -> None:
    """The deploy hook is no Nagios plugin (certbot runs it): its usage error stays 2."""
    proc = subprocess.run([str(BIN / "postfix-deploy-hook"), "--bogus"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "usage" in proc.stderr


# ------------------------------------------------------------------ the real stack
def probe_argv(stack: Stack, *extra: str, targets: tuple[str, ...] = ()) -> list[str]:
    return [str(RENEW_CHECK), "--config", str(stack.config_file), "probe",
            f"{LO}:{stack.postfix.smtp_port}", *targets, "--servername", DOMAIN, "--no-deep",
            *extra]


def test_probe_prints_time_and_days_left(module_stack: Stack) -> None:
    """``probe``: OK, perfdata ``time`` in seconds (``s``) and ``days_left`` with the
    lifetime-share thresholds as ``N:`` ranges (pebble's 5-year certificate: a quarter
    and a tenth of 1826 days)."""
    rc, out, err = run(probe_argv(module_stack))
    assert (rc, out.state) == (0, "OK"), (out, err)
    assert_consistent(rc, out)
    t, days = out.perf("time"), out.perf("days_left")
    assert t.uom == "s" and 0 < t.value < 5 and t.minimum == 0
    assert 1800 < days.value <= 1826 and days.minimum == 0
    assert (days.warn, days.crit) == ("456.5:", "182.6:")


def test_probe_thresholds_in_days(module_stack: Stack) -> None:
    """``-w``/``-c`` in days (as check_ssl_cert): above the days left is WARNING, then
    CRITICAL; the perfdata carries the same thresholds, and several targets get labels
    of their own."""
    rc, out, _ = run(probe_argv(module_stack, "-w", "3000"))
    assert (rc, out.state, out.perf("days_left").warn) == (1, "WARNING", "3000:")
    assert_consistent(rc, out)
    rc, out, _ = run(probe_argv(module_stack, "-w", "4000", "-c", "3000"))
    assert (rc, out.state, out.perf("days_left").crit) == (2, "CRITICAL", "3000:")
    assert_consistent(rc, out)
    second = f"{LO}:{module_stack.postfix.submission_port}"
    rc, out, _ = run(probe_argv(module_stack, targets=(second,)))
    assert rc == 0 and {p.label for p in out.perfdata} == {
        f"{LO}:{module_stack.postfix.smtp_port} time", f"{LO}:{module_stack.postfix.smtp_port} days_left",
        f"{second} time", f"{second} days_left"}


def test_survey_perfdata_uses_ranges(module_stack: Stack) -> None:
    """The survey's per-certificate ``days_left`` thresholds are ``N:`` ranges too, and a
    threshold given in days reaches them."""
    argv = [str(RENEW_CHECK), "--config", str(module_stack.config_file), "--no-deep", "-w", "3000"]
    rc, out, err = run(argv)
    perf = out.perf(f"{DOMAIN} days_left")
    assert perf.warn == "3000:" and perf.crit.endswith(":") and alerts(perf.warn, perf.value)
    assert rc >= 1, (out, err)
    assert_consistent(rc, out)



def test_peers_perfdata_is_perfdata_when_no_certificate_has_any(module_stack: Stack) -> None:
    """A survey whose status line carries no perfdata of its own (no certificate: a
    lineage Postfix does not use): the peers' counters still come after ' |', not in the
    status text Nagios shows."""
    other = module_stack.lineage.parent / "not-used.example.test"
    argv = [str(RENEW_CHECK), "--config", str(module_stack.config_file), "--no-deep", "--no-dns",
            "--lineage", str(other)]
    rc, out, _ = run(argv)
    assert "peers_in_tls" not in out.text, out
    assert out.perf("peers_in_tls").value == 0 and out.perf("tlsrpt_failed").value == 0, out
    assert_consistent(rc, out)


def _doc_blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_documented_nagios_commands_parse(module_stack: Stack) -> None:
    """The Nagios command definitions in docs/monitoring.md, with the arguments their
    service definitions pass, run against the private Postfix and print what the
    guidelines describe ($USER1$ is the venv's bin; sudo is dropped: tests run as root)."""
    [text] = [b for b in _doc_blocks("") if "define command" in b]
    commands = dict(re.findall(r"command_name\s+(\S+)\s+command_line\s+(.+)", text))
    services = re.findall(r"check_command\s+(\S+)", text)
    assert set(commands) == {s.split("!")[0] for s in services} and len(commands) == 2
    macros = {"$USER1$": str(BIN), "$HOSTADDRESS$": LO, "$HOSTNAME$": DOMAIN}
    for service in services:
        name, *args = service.split("!")
        if name == "check_postfix_tls":
            args[0] = str(module_stack.postfix.smtp_port)  # the private Postfix's port 25
        line = commands[name]
        for i, value in enumerate(args, 1):
            line = line.replace(f"$ARG{i}$", value)
        for macro, value in macros.items():
            line = line.replace(macro, value)
        argv = shlex.split(line)
        argv = argv[1:] if argv[0] == "/usr/bin/sudo" else argv
        assert "$" not in " ".join(argv), argv
        # the survey is CRITICAL here (the harness Postfix accepts anonymous ciphers)
        rc, out, err = run(argv, env={"POSTFIX_CERTWATCH_CONFIG": str(module_stack.config_file)})
        assert_consistent(rc, out)
        # times and days left; the survey adds what peers saw (counts, no thresholds)
        assert any(p.label.endswith(("time", "days_left")) for p in out.perfdata)
        assert all(p.label.endswith(("time", "days_left")) or
                   p.label.startswith(("peers_", "tlsrpt_")) for p in out.perfdata), out.perfdata
        if name == "check_postfix_tls":
            assert (rc, out.perf("days_left").warn, out.perf("days_left").crit) == (0, "20:", "10:")
        assert out.long_text, err  # the details follow the status line


def icinga_argv(text: str, host: dict[str, str], service_vars: dict[str, str]) -> list[str]:
    """The command line Icinga 2 builds from the documented CheckCommand (the subset the
    doc uses: a command array, arguments as strings or {value, set_if, skip_key, order},
    vars as strings, numbers or booleans)."""
    command = re.search(r"command = \[(.*?)\]", text, re.DOTALL)
    assert command
    argv = ["".join(re.findall(r'"([^"]*)"', part)) if "PluginDir" not in part else
            str(BIN) + re.findall(r'"([^"]*)"', part)[0] for part in command.group(1).split(",")]
    vars_ = {k: v.strip('"') for k, v in re.findall(r"^\s*vars\.(\w+) = (.+)$", text, re.MULTILINE)}
    vars_.update(service_vars)

    def resolve(value: str) -> str | None:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            found = host.get(name, vars_.get(name))
            if found is None:
                raise LookupError(name)
            return found if not re.fullmatch(r"\$[\w.]+\$", found) else resolve(found) or ""
        try:
            return re.sub(r"\$([\w.]+)\$", one, value)
        except LookupError:
            return None  # Icinga drops an argument whose macro is not set

    block = re.search(r"arguments = \{\n(.*?)\n  \}", text, re.DOTALL)
    assert block
    args: list[tuple[int, str, list[str]]] = []
    for key, spec in re.findall(r'^\s*"([^"]+)" = (.+)$', block.group(1), re.MULTILINE):
        fields = dict(re.findall(r'(\w+) = ("[^"]*"|[-\w]+)', spec)) if spec.startswith("{") \
            else {"value": spec}
        if "set_if" in fields:
            flag = resolve(fields["set_if"].strip('"'))
            if flag in (None, "", "false", "0"):
                continue
            args.append((int(fields.get("order", 0)), key, [key]))
            continue
        value = resolve(fields["value"].strip('"'))
        if value is None:
            continue
        words = [value] if fields.get("skip_key") == "true" else [key, value]
        args.append((int(fields.get("order", 0)), key, words))
    for _, _, words in sorted(args, key=lambda a: (a[0], a[1])):
        argv.extend(words)
    return argv


def test_documented_icinga2_command_parses(module_stack: Stack) -> None:
    """The Icinga 2 CheckCommand in docs/monitoring.md builds a command line that runs
    against the private Postfix: with the apply rule's -w/-c, and without them (the
    arguments are dropped and the lifetime-share thresholds apply)."""
    [text] = [b for b in _doc_blocks("") if "object CheckCommand" in b]
    host = {"address": LO, "host.name": DOMAIN}
    applied = dict(re.findall(r"^\s*vars\.(postfix_tls_\w+) = (\S+)$",
                              text.split("apply Service", 1)[1], re.MULTILINE))
    port = {"postfix_tls_port": str(module_stack.postfix.smtp_port)}
    env = {"POSTFIX_CERTWATCH_CONFIG": str(module_stack.config_file)}
    argv = icinga_argv(text.split("apply Service", 1)[0], host, {**applied, **port})
    assert argv[1:3] == ["probe", f"{LO}:{module_stack.postfix.smtp_port}"] and "-w" in argv
    rc, out, _ = run(argv, env)
    assert (rc, out.perf("days_left").warn, out.perf("days_left").crit) == (0, "20:", "10:")
    assert_consistent(rc, out)
    argv = icinga_argv(text.split("apply Service", 1)[0], host, port)
    assert "-w" not in argv and "-c" not in argv and "--no-deep" in argv
    rc, out, _ = run(argv, env)
    assert (rc, out.perf("days_left").warn) == (0, "456.5:")


# ------------------------------------------------------------------ start-up: the import set
HEAVY = ("dns", "apscheduler", "structlog", "prometheus_client", "daemon.renew_check.survey",
         "daemon.renew_check.dnsstatus", "daemon.renew_check.audit", "daemon.renew_check.mx",
         "daemon.renew_check.mtasts", "hook.dns", "hook.pipeline", "daemon.renew_daemon",
         # needed only to read keys, lineages or to write files, or by argparse for a width:
         "cryptography.hazmat.primitives.serialization", "hook.certs.lineage",
         "hook.certs.perms", "tempfile", "shutil", "bz2", "lzma")


def test_probe_path_imports_only_what_it_uses(module_stack: Stack) -> None:
    """One ``renew-check probe`` process (the installed entry point, as Nagios runs it)
    loads no DNS library, DANE, survey, scheduler, structlog or metrics code, nor what
    only key reading, lineages or file writing need: the modules it imported, read from
    ``-X importtime``, contain none of them."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(RENEW_CHECK),
                           *probe_argv(module_stack)[1:]],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
              if line.startswith("import time:") and "|" in line}
    assert "hook.tls.starttls" in loaded  # the reader works
    heavy = sorted(m for m in loaded if m.startswith(HEAVY) and
                   any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], heavy
