"""rebuild-volume's plan, built from canned facts: no host, no SSH, no Docker."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aimms_ops import rebuild
from aimms_ops.core.errors import InternalError, OpsError
from aimms_ops.host import bundle
from aimms_ops.inventory import loader as inventory
from aimms_ops.rebuild import Command, RebuildFacts, Step, VolumeSpec, VolumeUser, run
from aimms_ops.rebuild.commands import COUNT_SH
from aimms_ops.restore.source import DumpInfo
from tests.hostprog import said as said_

REPO = Path(__file__).resolve().parents[2]
HOST = inventory.load(REPO / "inventory.yml").host(None)
VOL, REDIS = HOST.volumes.postgres, HOST.volumes.redis
NOW = datetime(2026, 11, 25, 8, 30, 0, tzinfo=UTC)
KEEP = f"{VOL}_before_rebuild_20261125_083000"
BACKUP = f"{HOST.backup_dir}/aimms_postgres_20261125_020000.sql.gz"
SHA = "ab" * 32

CONFIG = f"""
services:
  postgres:
    image: postgres:15
    volumes:
    - postgres_data:/var/lib/postgresql/data:rw
  redis:
    image: redis:7
    volumes:
    - redis_data:/data:rw
volumes:
  postgres_data:
    external: true
    name: {VOL}
  redis_data:
    external: true
    name: {REDIS}
"""

FACTS = RebuildFacts(
    docker_ok=True, compose_cmd=("docker", "compose"), compose_file_exists=True,
    config_ok=True, config_yaml=CONFIG, container_image="postgres:15",
    docker_root="/var/lib/docker", image="postgres:15", image_present=True,
    volume_exists=True, volume_spec=VolumeSpec("local", {}, {}),
    volume_users=(VolumeUser("aimms-web-postgres-1", "aimms-web", "postgres"),),
    size_kb=2 * 1024 * 1024, avail_kb=20 * 1024 * 1024, keep_exists=False, state_text=None,
)
DUMP = DumpInfo(source=BACKUP, location="remote", size=123456, format="gz", sha256=SHA,
                sha256_recorded=SHA, databases=("template1", "aimms_web", "postgres"))


def plan(facts: RebuildFacts = FACTS, dump: DumpInfo = DUMP, **kw) -> rebuild.RebuildPlan:
    args = {"keep_old": True, "new_run": False, "now": NOW, "run_id": "RUN-NEW"} | kw
    return rebuild.build_plan(HOST, facts, dump, **args)


def actions(p: rebuild.RebuildPlan) -> dict[str, str]:
    return {s.name: s.action for s in p.steps}


def all_shown(p: rebuild.RebuildPlan) -> list[str]:
    return [c.shown for s in p.steps for c in s.commands]


def state_text(*steps: str, begun: tuple[str, ...] = (), sha: str = SHA, keep: str = KEEP,
               failed: tuple[str, ...] = ()) -> str:
    lines = ["run=RUN-OLD", "by=alice@laptop", f"volume={VOL}",
             'volume_spec={"Driver":"local","Labels":{"team":"web"},"Options":{}}',
             f"backup={BACKUP}", f"backup_sha256={sha}", f"keep={keep}"]
    for s in steps:
        lines += [f"begin={s}", f"done={s} seconds=0.1"]
    lines += [f"begin={s}" for s in begun]
    lines += [f"failed={s} it broke" for s in failed]
    return "".join(f"2026-11-25T08:00:0{i % 10}Z {ln}\n" for i, ln in enumerate(lines))


# --- a fresh run ---------------------------------------------------------------------


def test_fresh_plan_runs_every_step_in_order_with_exact_commands():
    p = plan()
    assert [s.name for s in p.steps] == list(rebuild.STEPS)
    assert set(actions(p).values()) == {"run"}
    assert p.keep == KEEP and p.run_id == "RUN-NEW"
    shown = all_shown(p)
    cd = f"cd {HOST.compose.project_dir} && docker compose -f {HOST.compose.file_path} -p aimms-web"
    assert shown[0] == f"{cd} down"
    assert shown.index(f"docker volume rm {VOL}") > shown.index(f"{cd} down")
    assert f"docker volume create {VOL}" in shown
    assert f"{cd} up -d" in shown
    # Every command is shown as the line that is sent (a packaged script or the host
    # program from the bundle); nothing is left to fill in at run time.
    for s in p.steps:
        for c in s.commands:
            if c.script.endswith(".sh"):
                assert c.line == bundle.script_command(c.script, c.argv[1:]), c.shown
                assert c.shown == c.line and c.short.startswith(c.script)
            elif c.script:
                assert c.line == bundle.program_command(c.argv), c.shown
                assert c.line.endswith(" " + shlex.join(c.argv))
                assert c.shown == c.line and c.short.startswith(c.script)
            else:
                assert c.line == c.shown and c.line.endswith(shlex.join(c.argv[-3:]))


def test_commands_that_use_the_container_find_it_on_the_host():
    p = plan()
    for name in ("restore", "verify"):
        for c in p.step(name).commands:
            assert c.script in ("postgres-exec.sh", "restore-stream.sh"), c.shown
            words = c.argv[2:4] if c.argv[1:2] == ("--detach",) else c.argv[1:3]
            assert words == (HOST.compose.project, HOST.compose.postgres_service)
    busy, stream, *estimates = p.step("restore").commands
    assert "pg_stat_activity" in busy.argv[-1] and busy.reads == "idle"
    # The rebuild holds the cluster lock itself: the stream takes none; the cluster is
    # new, so what its swap replaces (the empty template1 and postgres) is dropped.
    assert stream.argv[1:] == (HOST.compose.project, HOST.compose.postgres_service,
                               HOST.postgres.superuser, "gz", BACKUP, "", "",
                               str(HOST.lock_timeout), "drop", "")
    estimates, analyze = estimates  # one command for every database, then ANALYZE
    assert estimates.about == analyze.about == ", ".join(DUMP.databases)
    assert analyze.reads == "analyze" and analyze.argv[1] == "--detach"
    listing, *counts = p.step("verify").commands
    assert listing.reads == "databases" and [c.about for c in counts] == list(DUMP.databases)


def test_dry_run_json_holds_the_exact_lines():
    data = plan().as_dict()
    steps = data["steps"]
    assert isinstance(steps, list)
    sent = [c.line for s in plan().steps for c in s.commands]
    assert [c["command"] for s in steps for c in s["commands"]] == sent
    assert all(c["stdin"] is None for s in steps for c in s["commands"])


def test_stop_never_removes_volumes():
    for c in plan().step("stop").commands:
        assert "-v" not in shlex.split(c.line) and "--volumes" not in c.line


def test_keep_copies_into_the_named_volume_through_a_throwaway_container():
    keep = plan().step("keep").commands
    assert keep[0].argv[:3] == ("docker", "volume", "create") and keep[0].argv[-1] == KEEP
    copy = keep[1].argv
    assert copy[:8] == ("docker", "run", "--rm", "--name", "aimms-ops-copy-RUN-NEW",
                        "--network", "none", "--user")
    assert f"{VOL}:/from:ro" in copy and f"{KEEP}:/to" in copy and "postgres:15" in copy
    assert keep[2].argv[4] == "aimms-ops-check-RUN-NEW" and f"{KEEP}:/to:ro" in keep[2].argv


def test_keep_name_is_utc():
    from datetime import timedelta, timezone
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert rebuild.keep_name(VOL, local) == KEEP


def test_restore_of_a_local_dump_is_streamed():
    local = replace(DUMP, source="/tmp/x.sql.gz", location="local")
    _, cmd, *_ = plan(dump=local).step("restore").commands
    assert cmd.argv[5] == "-" and cmd.stdin_file == "/tmp/x.sql.gz"
    assert "< /tmp/x.sql.gz" in cmd.shown
    assert cmd.as_dict()["stdin"] == "/tmp/x.sql.gz"


def test_volume_is_recreated_with_its_labels():
    facts = replace(FACTS, volume_spec=VolumeSpec("local", {}, {"team": "web"}))
    (cmd,) = plan(facts).step("create").commands
    assert cmd.argv == ("docker", "volume", "create", "--label", "team=web", VOL)


def test_no_keep_old_skips_the_copy_and_the_disk_check():
    p = plan(replace(FACTS, avail_kb=1), keep_old=False)
    assert actions(p)["keep"] == "skip" and p.keep is None and p.get_back == ()
    assert actions(p)["rm"] == "run"


def test_missing_volume_skips_keep_and_rm():
    p = plan(replace(FACTS, volume_exists=False, volume_spec=None, size_kb=None, avail_kb=None))
    assert actions(p)["keep"] == "skip" and actions(p)["rm"] == "skip"
    assert actions(p)["create"] == "run"


def test_get_back_names_the_kept_volume():
    back = "\n".join(plan().get_back)
    assert f"-v {KEEP}:/from:ro -v {VOL}:/to" in back
    assert f"docker volume rm {KEEP}" in back


# --- refusals before anything is stopped ---------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"docker_ok": False, "docker_error": "no socket"}, "docker does not answer"),
    ({"compose_cmd": ()}, "neither docker compose nor docker-compose"),
    ({"compose_file_exists": False}, "does not exist"),
    ({"config_ok": False, "config_error": "yaml: bad"}, "config fails.*yaml: bad"),
    ({"config_yaml": CONFIG.replace("  postgres:\n    image", "  db:\n    image")},
     "has no service postgres"),
    ({"config_yaml": CONFIG.replace(f"name: {VOL}", "name: other")}, "declares no volume"),
    ({"config_yaml": CONFIG.replace("  postgres_data:\n    external: true",
                                    "  postgres_data:\n    external: false")},
     "not declared external"),
    ({"config_yaml": CONFIG.replace("- postgres_data:/var", "- redis_data:/var")},
     "does not mount the volume"),
    ({"image_present": False}, "image postgres:15 is not on"),
    ({"image": ""}, "cannot tell the image"),
    ({"volume_spec": VolumeSpec("local", {"type": "none", "device": "/data"}, {})},
     "not a plain local volume"),
    ({"volume_spec": VolumeSpec("rexray", {}, {})}, "not a plain local volume"),
    ({"volume_users": (VolumeUser("debug", "", ""),)}, "also used by debug"),
    ({"size_kb": None, "measure_error": "boom"}, "cannot measure.*boom"),
    ({"avail_kb": 1024}, "not enough disk to keep the old data"),
    ({"keep_exists": True}, "exists already"),
])
def test_preflight_refusals(change, message):
    with pytest.raises(OpsError, match=message) as exc:
        plan(replace(FACTS, **change))
    assert exc.value.message.startswith("refusing to rebuild")


@pytest.mark.parametrize("problem", ["the gzip stream is damaged or truncated (x)",
                                     "sha256 mismatch: a vs b",
                                     "the dump is incomplete: its completion marker is missing"])
def test_a_bad_backup_is_refused(problem):
    with pytest.raises(OpsError, match="not usable") as exc:
        plan(dump=replace(DUMP, problems=(problem,)))
    assert problem in str(exc.value)


def test_same_volume_for_postgres_and_redis_is_refused():
    host = replace(HOST, volumes=replace(HOST.volumes, redis=VOL))
    with pytest.raises(OpsError, match="both the postgres and the Redis"):
        rebuild.build_plan(host, FACTS, DUMP, keep_old=True, new_run=False, now=NOW,
                           run_id="R")


def test_redis_volume_is_never_named():
    p = plan()
    for s in p.steps:
        for c in s.commands:
            assert not any(REDIS in w for w in c.argv), c.shown
    for word in (REDIS, f"{REDIS}:/data"):
        bad = Step("keep", "x", (Command("x", ("docker", "run", "-v", word)),), "run")
        with pytest.raises(InternalError, match="names the Redis volume") as exc:
            rebuild.refuse_redis((*p.steps, bad), REDIS)
        assert not isinstance(exc.value, OpsError)  # a bug, not the operator's to fix


def test_a_bug_ends_as_an_internal_error_not_as_advice(monkeypatch):
    from invoke import Exit

    from aimms_ops.cli.base import DEBUG_ENV, ops_task

    @ops_task()
    def broken(c):
        rebuild.refuse_redis((Step("keep", "x", (Command("x", ("-v", REDIS)),), "run"),),
                             REDIS)

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(Exit) as exc:
        broken.body(None)
    assert exc.value.code == 70
    assert str(exc.value.message).startswith("internal error: InternalError: refusing the "
                                             "plan: step keep names the Redis volume")
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(InternalError):
        broken.body(None)


# --- resuming an interrupted run -----------------------------------------------------


def resume(*steps: str, facts: RebuildFacts = FACTS, **kw) -> rebuild.RebuildPlan:
    return plan(replace(facts, state_text=state_text(*steps, **kw)))


def test_resume_after_rm_never_deletes_again():
    gone = replace(FACTS, volume_exists=False, volume_spec=None, size_kb=None, avail_kb=None)
    p = resume("stop", "keep", "rm", facts=gone)
    assert p.run_id == "RUN-OLD" and p.keep == KEEP and p.resumed is not None
    a = actions(p)
    assert a["keep"] == "done" and a["rm"] == "done"
    assert [s.name for s in p.to_run] == ["stop", "create", "start", "wait", "restore", "verify"]
    # The volume is recreated as the interrupted run recorded it.
    assert p.step("create").commands[0].argv == ("docker", "volume", "create", "--label",
                                                 "team=web", VOL)


@pytest.mark.parametrize("done, begun, first", [
    (("stop", "keep", "rm", "create"), (), "start"),
    (("stop", "keep", "rm", "create", "start"), ("wait",), "wait"),
    (("stop", "keep", "rm", "create", "start", "wait"), ("restore",), "restore"),
    (("stop", "keep", "rm", "create", "start", "wait", "restore"), (), "verify"),
    # The record of rm was lost, but create had begun: the volume was deleted.
    (("stop", "keep"), ("rm", "create"), "stop"),
])
def test_resume_after_the_volume_was_deleted(done, begun, first):
    # Even when a volume of that name exists (the new one), it is never deleted again.
    p = resume(*done, begun=begun)
    assert actions(p)["rm"] == "done" and actions(p)["keep"] == "done"
    assert p.to_run[0].name == first
    assert "rm" not in [s.name for s in p.to_run]


def test_rm_begun_but_not_recorded_runs_only_when_the_volume_is_still_there():
    p = resume("stop", "keep", begun=("rm",))
    assert actions(p)["rm"] == "run" and actions(p)["keep"] == "done"
    gone = replace(FACTS, volume_exists=False, volume_spec=None)
    assert actions(resume("stop", "keep", begun=("rm",), facts=gone))["rm"] == "skip"


def test_resume_before_the_volume_is_touched_stops_the_stack_again():
    p = resume("stop", failed=("keep",), begun=("keep",))
    assert actions(p)["stop"] == "run" and actions(p)["keep"] == "run"
    # A kept volume half-copied by the interrupted run is no reason to refuse.
    assert actions(resume("stop", begun=("keep",), facts=replace(FACTS, keep_exists=True)))[
        "keep"] == "run"


def test_resume_with_another_backup_is_refused():
    with pytest.raises(OpsError, match="unfinished rebuild") as exc:
        resume("stop", "keep", "rm", sha="cd" * 32)
    assert "--file=aimms_postgres_20261125_020000.sql.gz" in str(exc.value)
    assert "--new-run" in str(exc.value)


def test_new_run_sets_the_unfinished_run_aside():
    p = plan(replace(FACTS, state_text=state_text("stop", "keep", "rm", sha="cd" * 32)),
             new_run=True)
    assert p.set_aside is not None and p.set_aside.run == "RUN-OLD"
    assert p.resumed is None and p.run_id == "RUN-NEW" and p.keep == KEEP
    assert set(actions(p).values()) == {"run"}


def test_resume_of_another_volume_is_refused():
    text = state_text("stop").replace(f"volume={VOL}", "volume=other")
    with pytest.raises(OpsError, match="another volume"):
        plan(replace(FACTS, state_text=text))


# --- records -------------------------------------------------------------------------


def test_state_round_trip():
    p = plan()
    lines = [*rebuild.header_lines(p, "bob@box"), "begin=stop", "done=stop seconds=1.0",
             "begin=keep", "failed=keep disk full"]
    st = rebuild.parse_state("".join(f"2026-11-25T08:00:00Z {ln}\n" for ln in lines))
    assert st is not None
    assert (st.run, st.by, st.volume, st.backup, st.backup_sha256, st.keep) == (
        "RUN-NEW", "bob@box", VOL, BACKUP, SHA, KEEP)
    assert st.volume_spec == VolumeSpec("local", {}, {})
    assert list(st.done) == ["stop"] and st.failed == {"keep": "2026-11-25T08:00:00Z disk full"}
    assert st.last_step == "stop" and not st.volume_deleted
    assert "after step stop; keep failed: disk full" in st.describe()


@pytest.mark.parametrize("text", [None, "", "garbage\n", "2026 by=x\n"])
def test_no_state(text):
    assert rebuild.parse_state(text) is None


def test_audit_line_quotes_what_needs_it():
    line = rebuild.audit_line({"run": "R1", "result": "failed", "reason": "it broke: 'x'",
                               "kept": None, "by": "a@b"})
    assert line.startswith("rebuild-volume run=R1 result=failed reason=")
    assert "kept" not in line
    assert shlex.split(line)[3] == "reason=it broke: 'x'"


def test_the_rebuild_facts_of_the_host():
    out = {
        "docker.root": "/var/lib/docker", "image.present": "1", "volume.exists": "1",
        "volume.json": '{"Driver":"local","Labels":null,"Mountpoint":"/x","Name":"v",'
        '"Options":null,"Scope":"local"}',
        "volume.users": [{"name": "aimms-web_postgres_1", "project": "aimms-web",
                          "service": "postgres"}],
        "volume.size_kb": "71000", "volume.avail_kb": "77000000", "keep.exists": "0",
        "state": "2026 run=R1\n",
    }
    f = rebuild.add_volume_facts(rebuild.RebuildFacts(), "img", out)
    assert f.image == "img" and f.image_present and f.volume_exists
    assert f.volume_spec == VolumeSpec("local", {}, {})
    assert f.volume_users == (VolumeUser("aimms-web_postgres_1", "aimms-web", "postgres"),)
    assert (f.size_kb, f.avail_kb, f.keep_exists) == (71000, 77000000, False)
    assert f.state_text == "2026 run=R1\n"
    assert rebuild.add_volume_facts(rebuild.RebuildFacts(), "img", {}).state_text is None


def test_counts_and_copy_check():
    assert rebuild.parse_counts('{"table":"public.a","rows":3}\n'
                                '{"table":"public.we=i\\nrd","rows":4}\nnoise\n') == [
        ("public.a", 3), ("public.we=i\nrd", 4)]
    p = plan()
    assert "3 files" in run._check_copy("/from 3 100\n/to 3 100\n", p)
    with pytest.raises(OpsError, match="does not match"):
        run._check_copy("/from 3 100\n/to 2 60\n", p)
    with pytest.raises(OpsError, match="printed no file count and size for both sides: "
                       "'/from 3 3e"):
        run._check_copy("/from 3 3e+09\n/to 3 3e+09\n", p)


def test_the_copy_check_counts_volumes_of_more_than_2_gib(tmp_path):
    """The count runs in the postgres image, whose awk is mawk: run here with the same
    awk, on two sides of 3 GB each (sparse files), the copy is found whole."""
    sides = {}
    for side in ("from", "to"):
        d = tmp_path / side
        d.mkdir()
        for i in range(2):
            with open(d / f"seg{i}", "wb") as fh:
                fh.truncate(1_500_000_000)
        sides[side] = str(d)
    assert COUNT_SH.count("for d in /from /to;") == 1
    script = COUNT_SH.replace("for d in /from /to;", f"for d in {sides['from']} {sides['to']};")
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                         check=True).stdout
    out = "\n".join(ln.replace(sides["from"] + " ", "/from ", 1).replace(sides["to"] + " ",
                                                                       "/to ", 1)
                    for ln in out.splitlines())
    assert run._check_copy(out, plan()).startswith("2 files, "), out


def test_error_line_skips_docker_help_hints():
    err = ("docker: Error response from daemon: Conflict. The container name is already in "
           "use.\nSee 'docker run --help'.\nRun 'docker run --help' for more information\n")
    assert rebuild.error_line(err).startswith("docker: Error response from daemon: Conflict")
    assert rebuild.error_line("just this\n") == "just this"
    assert rebuild.error_line("") == ""


def test_the_executor_reads_each_command_as_the_plan_says():
    from aimms_ops.host.remote import RunResult

    p = plan()
    reads = {c.reads for s in p.steps for c in s.commands}
    assert reads == {"", "copy", "volume-rm", "wait", "idle", "restore", "estimates",
                     "analyze", "databases", "counts"}
    found = run._Found()
    listing, *counts = p.step("verify").commands

    def ok(stdout: str) -> RunResult:
        return RunResult(command="x", rc=0, stdout=stdout, stderr="")

    with pytest.raises(OpsError, match="missing after the restore: aimms_web"):
        run._read(listing, ok("postgres\ntemplate1\n"), p, found, "postgres")
    assert run._read(listing, ok("postgres\ntemplate1\naimms_web\n"), p, found, "x") is None
    rows = '{"table":"public.orders","rows":3}\n{"table":"public.a=ird","rows":1}\n'
    said = run._read(counts[1], ok(rows), p, found, "x")
    assert said == "3 databases, 2 tables counted"
    assert found.tables == [run.TableCount("aimms_web", "public.orders", 3),
                            run.TableCount("aimms_web", "public.a=ird", 1)]
    busy = p.step("restore").commands[0]
    with pytest.raises(OpsError, match=r"another restore is still running.*of postgres"):
        run._read(busy, ok("1\n"), p, found, "postgres")
    (wait,) = p.step("wait").commands
    waited = said_("wait-postgres", {"container": "0123456789abcdef", "seconds": 3})
    assert run._read(wait, ok(waited), p, found, "x") == "container 0123456789ab"
