"""The learner's own attempt at a section's pattern (`panel(exercise_id)`, one call from the section's
page), and the room's exercises for the instructor (`instructor_figures()`, from page 7).

The panel: the starter in an editor (the learner's stored code once they have some), "Run checks"
(graded in the sandbox by exercises/, followed in a status box that shows the place in the queue
and each check), each check's verdict with what it measured, hints, and the answer key with a diff
against the learner's code once they pass (or ask, after two runs that did not). Where the policy
says no (exercises/policy.py), the exercise is shown read-only with the reason. The code, the last
results and the tally are kept with the learner's progress (runtime/exercise_store.py), so a
refresh or a restart brings them back; a starter that changed since shows as a diff.
"""

from __future__ import annotations

import difflib
import logging

import pandas as pd
import streamlit as st

import exercises
import ui
from labbench import migrations
from runtime import exercise_store as store
from ui import editor, exercise_runs, gate, learner
from ui.widgets import escape_markdown

log = logging.getLogger("lab2")
MARKS = {True: ":green[✓]", False: ":red[✗]", None: ":gray[–]"}
TALLY = {"runs": 0, "failed_runs": 0, "passed": False, "answer_seen": False}
FAILED_RUNS_BEFORE_ANSWER = 2


# --- where the learner's exercises are kept ---------------------------------------------------


def _tables_revisions() -> frozenset[str]:
    """The revisions whose schema holds the exercise tables: the one whose file makes them, and later."""
    order = [r.revision for r in migrations.history_as_on_disk()]
    files = [r.filename for r in migrations.history_as_on_disk()]
    first = next((i for i, name in enumerate(files) if name.endswith("_exercise_attempts.py")), len(order))
    return frozenset(order[first:])


def tables_present() -> bool:
    status = ui.backend_status()
    return status.database_ok and not status.database_busy and status.schema_revision in _tables_revisions()


def _learner_id() -> str | None:
    """The learner whose rows keep this tab's exercises, or None when nothing can be stored now."""
    me = learner.current()
    return me.id if me is not None and me.id and not me.note and tables_present() else None


def _storable(code: str) -> bool:
    """Code the store may hold: what exercises.validate accepts in size and characters."""
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, which no database text holds
        return False
    return 0 < size <= exercises.MAX_CODE_BYTES and "\x00" not in code


def _enabled() -> bool:
    """The instructor's switch, read now (on a learner's own machine it does not apply)."""
    if not gate.instructor_key_set() or not tables_present():
        return False
    try:
        return ui.run(store.switch(ui.database(), store.EXERCISES_SWITCH))
    except Exception:
        log.warning("could not read the exercises switch", exc_info=True)
        return False


def _restore(exercise: exercises.Exercise, key: str, learner_id: str | None) -> None:
    """Once per learner and tab: their stored code, results and tally, if this tab has no code yet."""
    state = st.session_state
    previous = state.get(f"{key}:loaded")
    if previous == (learner_id or "tab"):
        return
    if previous not in (None, "tab"):  # another learner in this tab ("start over"): nothing of the last stays
        for name in ("code", "shown", "saved", "began_from", "result", "tally"):
            state.pop(f"{key}:{name}", None)
    state[f"{key}:loaded"] = learner_id or "tab"
    state.setdefault(f"{key}:began_from", exercise.stub)
    state.setdefault(f"{key}:saved", exercise.stub)  # the untouched starter needs no row
    state.setdefault(f"{key}:tally", dict(TALLY))
    if learner_id is None or editor.code_key(key) in state:
        return
    with ui.errors_shown():
        db = ui.database()
        attempt = ui.run(store.load(db, learner_id, exercise.id))
        if attempt is None:
            return
        editor.put(key, attempt.code)
        state[f"{key}:saved"] = attempt.code
        state[f"{key}:began_from"] = ui.run(store.starter_text(db, attempt.starter_hash)) or exercise.stub
        state[f"{key}:result"] = attempt.result
        state[f"{key}:tally"] = {"runs": attempt.runs, "failed_runs": attempt.failed_runs, "passed": attempt.passed,
                                 "answer_seen": attempt.answer_seen}


def _save_draft(exercise: exercises.Exercise, key: str, code: str, learner_id: str | None) -> None:
    state = st.session_state
    if learner_id is None or code == state.get(f"{key}:saved") or not _storable(code):
        return
    try:
        ui.run(store.save_code(ui.database(), learner_id, exercise.id, code, starter=state[f"{key}:began_from"]))
        state[f"{key}:saved"] = code
    except Exception:
        log.warning("could not save a learner's exercise code", exc_info=True)
        st.caption("Your code could not be saved just now (the database did not answer); it is kept in this tab.")


# --- the panel ------------------------------------------------------------------------------------


def panel(exercise_id: str) -> None:
    exercise = exercises.get(exercise_id)
    key, state = f"exercise:{exercise.id}", st.session_state
    learner_id = _learner_id()
    _restore(exercise, key, learner_id)
    st.subheader(f"Your turn: {exercise.title}")
    decided = exercises.policy(instructor_enabled=_enabled())
    if not decided.allowed:
        st.info(escape_markdown(decided.reason) + " The exercise is shown read-only.")
        st.code(state.get(editor.code_key(key)) or exercise.stub, language="python", line_numbers=True)
    else:
        st.caption(escape_markdown(decided.reason))
        _starter_changed(exercise, key)
        code = editor.editor(key, exercise.stub)
        beside_editor = st.container()
        _save_draft(exercise, key, code, learner_id)
        if not _storable(code) and code.strip():
            beside_editor.warning(escape_markdown(exercises.validate(exercise.id, code) or "")
                                  + " It is not saved until it fits.")
        run_column, reset_column = st.columns([1, 3])
        if run_column.button("Run checks", key=f"{key}:run_checks", type="primary"):
            if problem := exercises.validate(exercise.id, code):
                beside_editor.error(escape_markdown(problem))
            elif state.get(f"{key}:running") is not None:  # one place in the queue per learner and exercise
                beside_editor.info("Your last run is still going: its results come below, then run again.")
            else:
                state[f"{key}:running"] = exercise_runs.start(exercise.id, code, _keeper(exercise, key, code, learner_id))
        if reset_column.button("Reset to the starter", key=f"{key}:reset"):
            editor.put(key, exercise.stub)
            state[f"{key}:began_from"] = exercise.stub
            st.rerun()
        _follow(key)
    if result := state.get(f"{key}:result"):
        try:
            show_result(result, state.get(editor.code_key(key)) or "")
        except (KeyError, TypeError, ValueError):  # a row written by another version of the lab
            st.caption("Your last results were stored in another format by an earlier version of the lab; "
                       "run the checks again to see them.")
    with st.expander(f"Hints ({len(exercise.hints)})"):
        st.markdown("\n".join(f"{n}. {hint}" for n, hint in enumerate(exercise.hints, 1)))
    _answer_key(exercise, key, learner_id)
    with st.expander("How your code runs here"):
        _how_it_runs()


def _keeper(exercise: exercises.Exercise, key: str, code: str, learner_id: str | None):
    """What stores a run's results in the learner's rows (on the shared loop), or None."""
    if learner_id is None:
        return None
    db, starter = ui.database(), st.session_state[f"{key}:began_from"]

    async def keep(result: dict) -> None:
        await store.record_run(db, learner_id, exercise.id, code, starter=starter, result=result,
                               passed=result["passed"], failed_checks=exercise_runs.failed_checks(result))

    return keep


def _follow(key: str) -> None:
    """Show the run this tab started until it ends (again on the next page run, if this one is
    stopped); then its result replaces the last."""
    state = st.session_state
    running = state.get(f"{key}:running")
    if running is None:
        return
    try:
        result = ui.run_showing(lambda report: exercise_runs.follow(running, report), label="Running the checks",
                                about=exercise_runs.about_seconds(), timeout=120)
    except ui.BackendTimeout:
        st.warning("No results within 120 s: the checks are still queued or running. Rerun the page to see them.")
        return
    except Exception as exc:
        del state[f"{key}:running"]
        log.exception("an exercise run failed")
        st.error(escape_markdown(ui.error_message(exc)))
        return
    del state[f"{key}:running"]
    if not result["ran"]:
        st.error(escape_markdown(result["message"]))
        return
    state[f"{key}:result"] = result
    tally = state[f"{key}:tally"]
    tally["runs"] += 1
    tally["failed_runs"] += not result["passed"]
    tally["passed"] = tally["passed"] or result["passed"]


def show_result(result: dict, code: str) -> None:
    """A run's summary, then each check: its verdict, what it measured, and its evidence."""
    (st.success if result["passed"] else st.error)(escape_markdown(result["message"]))
    waited = f", {result['waited_seconds']:.1f} s of it waiting for a free runner" if result["waited_seconds"] >= 0.1 else ""
    st.caption(f"Graded in {result['seconds']:.1f} s{waited}.")
    if result["code_hash"] != store.starter_hash(code):
        st.caption("These results are for your code as it was when you ran the checks; you have changed it since.")
    if result.get("not_kept"):
        st.caption(result["not_kept"])
    first_failure = next((c["name"] for c in result["checks"] if c["passed"] is False), None)
    for check in result["checks"]:
        goal = "" if check["required"] else " (stretch goal)"
        st.markdown(f"{MARKS[check['passed']]} **{escape_markdown(check['name'])}**{goal}: "
                    f"{escape_markdown(check['message'])}")
        if check["figures"]:
            st.caption(" · ".join(f"{escape_markdown(str(name).replace('_', ' '))}: {escape_markdown(str(value))}"
                                  for name, value in check["figures"].items()))
        if check["evidence"]:
            with st.expander(f"Evidence: {check['name']}", expanded=check["name"] == first_failure):
                st.code("\n".join(check["evidence"]), language=None, wrap_lines=True)
    if result["output"]:
        with st.expander("What your code printed"):
            st.code(result["output"], language=None)


def _starter_changed(exercise: exercises.Exercise, key: str) -> None:
    state = st.session_state
    began_from = state[f"{key}:began_from"]
    if began_from == exercise.stub:
        return
    st.info("The starter code of this exercise changed since you began: your code is kept.")
    with st.expander("What changed in the starter"):
        st.code("".join(difflib.unified_diff(began_from.splitlines(True), exercise.stub.splitlines(True),
                                             "the starter you began from", "the starter now")), language="diff")
    keep_column, restart_column = st.columns(2)
    if keep_column.button("Keep my code", key=f"{key}:keep_mine"):
        state[f"{key}:began_from"], state[f"{key}:saved"] = exercise.stub, None
        st.rerun()
    if restart_column.button("Start from the new starter", key=f"{key}:take_new"):
        editor.put(key, exercise.stub)
        state[f"{key}:began_from"] = exercise.stub
        st.rerun()


def _answer_key(exercise: exercises.Exercise, key: str, learner_id: str | None) -> None:
    state = st.session_state
    tally = state[f"{key}:tally"]
    with st.expander("The answer key"):
        if tally["passed"] or tally["answer_seen"]:
            st.code(exercise.answer_key, language="python", line_numbers=True)
            st.markdown("Your code against it:")
            st.code(exercise.answer_diff(state.get(editor.code_key(key)) or exercise.stub) or "(the same)",
                    language="diff")
        elif tally["failed_runs"] >= FAILED_RUNS_BEFORE_ANSWER:
            if st.button("Show the answer key", key=f"{key}:show_answer"):
                tally["answer_seen"] = True
                if learner_id is not None:
                    with ui.errors_shown():
                        ui.run(store.mark_answer_seen(ui.database(), learner_id, exercise.id))
                st.rerun()
        else:
            st.caption(f"It opens when your code passes every check, or on request after "
                       f"{FAILED_RUNS_BEFORE_ANSWER} runs that do not ({tally['failed_runs']} so far).")


def _how_it_runs() -> None:
    st.markdown("\n".join(f"- {'✓' if p.present else '✗ missing:'} {p.name} ({escape_markdown(p.how)})"
                          for p in exercises.capabilities().protections()))
    status = exercises.queue_status()
    st.caption(f"Runs take turns in this app process, {status.slots} at a time, below the app's priority: "
               f"{status.running} running and {status.waiting} waiting now; a run takes about "
               f"{status.average_seconds:.1f} s (the average of the last runs here).")


# --- the instructor's page ------------------------------------------------------------------------


def instructor_figures() -> None:
    """The switch that lets learners run code on this shared server, the queue, and per exercise:
    learners who attempted it, who passed, and the check failed most often."""
    st.subheader("Exercises")
    if not tables_present():
        st.info("The schema is below the revision that stores exercises (upgrade above): learners' exercise "
                "code is kept in their tabs only, and exercises stay read-only on this shared server.")
        return
    db = ui.database()
    with ui.errors_shown():
        on = ui.run(store.switch(db, store.EXERCISES_SWITCH))
        st.markdown(f"Learners may run their exercise code on this server: **{'on' if on else 'off'}**.")
        if not exercises.capabilities().os_sandbox:
            st.warning("This server has no bubblewrap (the OS sandbox): exercises stay read-only even when on.")
        on_column, off_column = st.columns(2)
        if on_column.button("Turn exercises on", key="room_exercises_on", disabled=on):
            ui.run(store.set_switch(db, store.EXERCISES_SWITCH, True))
            st.rerun()
        if off_column.button("Turn exercises off", key="room_exercises_off", disabled=not on):
            ui.run(store.set_switch(db, store.EXERCISES_SWITCH, False))
            st.rerun()
        figures = ui.run(store.exercise_figures(db))
        rows = []
        for exercise in exercises.catalogue():
            counted = figures.get(exercise.id)
            rows.append({"section": exercise.section, "exercise": exercise.title,
                         "attempted": counted.attempted if counted else 0, "passed": counted.passed if counted else 0,
                         "most often failed": f"{counted.most_failed} ({counted.most_failed_runs} runs)"
                         if counted and counted.most_failed else ""})
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption("Over every stored learner, active or not. Attempted: ran their code at least once; passed: "
                   "passed every required check in some run; most often failed: the check failed in the most runs.")
        status = exercises.queue_status()
        st.caption(f"This app process runs {status.slots} at a time: {status.running} running, {status.waiting} "
                   "waiting now (each app process has a queue of its own).")
