"""Operator feedback: statistics on a hand-made file, and malformed files refused whole.

One published run (2025-01-01) signalled z1..z6 (zorgtoeslag) and h1..h3 (huurtoeslag).
The feedback file below gives, per signal (definitions in flows/feedback.py):

    z1 contacted, applied, granted                 contacted applied granted
    z2 contacted, applied, not_entitled            contacted applied not_entitled
    z3 unreachable, then contacted and declined    contacted declined
       on the same day (declined is further along)
    z4 unreachable                                 unreachable
    z5 contacted                                   contacted
    z6 not_entitled, later granted on objection    contacted applied granted (latest decision)
    h1 contacted, applied, granted                 contacted applied granted
    h2 unreachable                                 unreachable
    h3 no feedback

    zorgtoeslag: 6 with feedback, 5 contacted, 3 applied, 2 granted, 1 not entitled,
                 1 declined, 1 unreachable; take-up 2/5 = 0.4, precision 2/3
    huurtoeslag: 2 with feedback, 1 contacted, 1 applied, 1 granted, 1 unreachable;
                 take-up 1/1 = 1.0, precision 1/1 = 1.0
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from flows.feedback import FeedbackError, feedback_statistics, store, validate
from pipelines import lifecycle
from pipelines.evaluate import SIGNAL_SCHEMA

SIGNALS = {f"z{i}": "zorgtoeslag" for i in range(1, 7)} | {
    f"h{i}": "huurtoeslag" for i in (1, 2, 3)
}

GOOD = """signal_id,outcome,outcome_date,scheme
s.z1,contacted,2025-01-10,zorgtoeslag
s.z1,applied,2025-01-20,zorgtoeslag
s.z1,granted,2025-03-01,zorgtoeslag
s.z2,contacted,2025-01-10,
s.z2,applied,2025-01-15,
s.z2,not_entitled,2025-02-01,
s.z3,unreachable,2025-01-10,
s.z3,contacted,2025-01-20,
s.z3,declined,2025-01-20,
s.z4,unreachable,2025-01-10,
s.z5,contacted,2025-01-10,
s.z6,not_entitled,2025-02-01,
s.z6,granted,2025-04-01,
s.h1,contacted,2025-01-05,huurtoeslag
s.h1,applied,2025-01-06,huurtoeslag
s.h1,granted,2025-02-01,huurtoeslag
s.h2,unreachable,2025-01-05,huurtoeslag
"""

EXPECTED = [
    {
        "scheme": "huurtoeslag",
        "signals_with_feedback": 2,
        "contacted": 1,
        "applied": 1,
        "granted": 1,
        "not_entitled": 0,
        "declined": 0,
        "unreachable": 1,
        "take_up": 1.0,
        "precision": 1.0,
    },
    {
        "scheme": "zorgtoeslag",
        "signals_with_feedback": 6,
        "contacted": 5,
        "applied": 3,
        "granted": 2,
        "not_entitled": 1,
        "declined": 1,
        "unreachable": 1,
        "take_up": 0.4,
        "precision": pytest.approx(2 / 3),
    },
]


@pytest.fixture
def runs(tmp_path):
    """An output folder with one published run and its (plain) signals."""
    root = tmp_path / "runs"
    folder = root / "2025-01-01-first"
    folder.mkdir(parents=True)
    manifest = {"run_id": folder.name, "reference_date": "2025-01-01", "created_at": "x"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    rows = [
        {
            "signal_id": f"s.{name}",
            "run_id": folder.name,
            "household_pid": f"h.{name}",
            "applicant_pid": f"a.{name}",
            "scheme": scheme,
            "benefit_year": 2025,
            "status": "new",
        }
        for name, scheme in SIGNALS.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMA), folder / "signals.parquet")
    return root


def _file(tmp_path, text: str | bytes, name="feedback.csv"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _import(path, runs):
    return store(validate(path, runs), runs)


def test_statistics_per_scheme_on_a_hand_made_file(tmp_path, runs):
    _import(_file(tmp_path, GOOD), runs)
    assert feedback_statistics(runs).to_pylist() == EXPECTED


def test_stored_rows_carry_the_signals_household_and_first_run(tmp_path, runs):
    path, new = _import(_file(tmp_path, GOOD), runs)
    assert new and path.parent == runs / "feedback"
    rows = pq.read_table(path).to_pylist()
    assert len(rows) == len(GOOD.splitlines()) - 1
    first = rows[0]
    assert first["signal_id"] == "s.z1" and first["household_pid"] == "h.z1"
    assert first["scheme"] == "zorgtoeslag" and first["run_id"] == "2025-01-01-first"
    assert first["outcome_date"] == dt.date(2025, 1, 10) and first["row_number"] == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_same_file_twice_is_imported_once(tmp_path, runs):
    path = _file(tmp_path, GOOD)
    _import(path, runs)
    again, new = _import(path, runs)
    assert not new
    assert len(list((runs / "feedback").glob("*.parquet"))) == 1
    assert feedback_statistics(runs).to_pylist() == EXPECTED


def test_a_later_file_adds_to_the_outcomes_and_repeats_count_once(tmp_path, runs):
    _import(_file(tmp_path, GOOD), runs)
    later = "signal_id,outcome,outcome_date\ns.z5,contacted,2025-01-10\ns.z5,applied,2025-02-01\n"
    _import(_file(tmp_path, later, "later.csv"), runs)
    z = feedback_statistics(runs).to_pylist()[1]
    assert (z["signals_with_feedback"], z["contacted"], z["applied"]) == (6, 5, 4)


def test_a_parquet_file_with_typed_dates_is_accepted(tmp_path, runs):
    table = pa.table(
        {
            "signal_id": ["s.h1", "s.h1"],
            "outcome": ["contacted", "granted"],
            "outcome_date": pa.array([dt.date(2025, 1, 5), dt.date(2025, 2, 1)], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "feedback.parquet")
    _import(tmp_path / "feedback.parquet", runs)
    (h,) = feedback_statistics(runs).to_pylist()
    assert (h["granted"], h["take_up"]) == (1, 1.0)


def test_imported_feedback_opens_a_case_for_the_next_run(tmp_path, runs):
    _import(_file(tmp_path, GOOD), runs)
    state = lifecycle.load_history(runs, dt.date(2025, 6, 1)).state.to_pylist()
    cases = {r["household_pid"]: (r["case_outcome"], r["case_on"]) for r in state}
    assert cases["h.z1"] == ("granted", dt.date(2025, 3, 1))
    assert cases["h.z3"] == ("declined", dt.date(2025, 1, 20))
    assert cases["h.h3"] == (None, None)


HEADER = "signal_id,outcome,outcome_date,scheme\n"
MALFORMED = {
    "an unknown signal": (
        HEADER + "s.z1,contacted,2025-01-10,\ns.nope,contacted,2025-01-10,\n",
        "row 2, signal_id: s.nope is not a signal of any published run",
    ),
    "an empty signal id": (HEADER + ",contacted,2025-01-10,\n", "row 1, signal_id: is empty"),
    "an unknown outcome": (
        HEADER + "s.z1,phoned,2025-01-10,\n",
        "row 1, outcome: phoned is not one of unreachable, contacted, applied, declined, "
        "not_entitled, granted",
    ),
    "an impossible date": (
        HEADER + "s.z1,contacted,2025-13-01,\n",
        "row 1, outcome_date: 2025-13-01 is not a date (YYYY-MM-DD)",
    ),
    "a date in the future": (
        HEADER + "s.z1,contacted,2999-01-01,\n",
        "row 1, outcome_date: 2999-01-01 is in the future",
    ),
    "a date before the signal": (
        HEADER + "s.z1,contacted,2024-12-31,\n",
        "row 1, outcome_date: 2024-12-31 is before the signal was first made "
        "(run 2025-01-01-first, reference date 2025-01-01)",
    ),
    "another scheme": (
        HEADER + "s.z1,contacted,2025-01-10,huurtoeslag\n",
        "row 1, scheme: huurtoeslag, but signal s.z1 is for zorgtoeslag",
    ),
    "a repeated row": (
        HEADER + "s.z1,contacted,2025-01-10,\ns.z2,contacted,2025-01-10,\n"
        "s.z1,contacted,2025-01-10,\n",
        "row 3, row: repeats row 1",
    ),
    "a BSN column": (
        "signal_id,outcome,outcome_date,bsn\ns.z1,contacted,2025-01-10,111222333\n",
        "column(s) bsn not accepted (feedback is kept under pseudonyms only",
    ),
    "a missing column": ("signal_id,outcome\ns.z1,contacted\n", "missing column(s) outcome_date"),
    "a row with an extra field": (
        HEADER + "s.z1,contacted,2025-01-10,\ns.z2,contacted,2025-01-10,,111222333\n",
        "row 2 has 5 field(s), the header 4",
    ),
    "not UTF-8": (
        (HEADER + "s.z1,contact\xe9d,2025-01-10,\n").encode("latin-1"),
        "cannot be read as CSV (UTF-8, comma separated, header row)",
    ),
    "only a header": (HEADER, "no rows"),
    "semicolons, as Dutch Excel saves CSV": (
        "signal_id;outcome;outcome_date\ns.z1;contacted;2025-01-10\n",
        "the columns are separated by semicolons (signal_id;outcome;outcome_date); save it as "
        "CSV with commas",
    ),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_file_is_refused_with_row_and_field_and_nothing_changes(tmp_path, runs, name):
    _import(_file(tmp_path, GOOD, "good.csv"), runs)
    before = sorted((runs / "feedback").iterdir())
    text, message = MALFORMED[name]
    path = _file(tmp_path, text)
    with pytest.raises(FeedbackError) as err:
        _import(path, runs)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "111222333" not in str(err.value)
    assert sorted((runs / "feedback").iterdir()) == before
    assert feedback_statistics(runs).to_pylist() == EXPECTED


def test_missing_values_in_a_parquet_file_are_refused_not_dropped(tmp_path, runs):
    table = pa.table(
        {
            "signal_id": ["s.z1", None],
            "outcome": [None, "contacted"],
            "outcome_date": pa.array([dt.date(2025, 1, 5), None], pa.date32()),
        }
    )
    pq.write_table(table, tmp_path / "feedback.parquet")
    with pytest.raises(FeedbackError) as err:
        validate(tmp_path / "feedback.parquet", runs)
    for problem in ("row 1, outcome: is empty", "row 2, signal_id: is empty"):
        assert problem in str(err.value)
    assert "row 2, outcome_date: is empty" in str(err.value)


def test_every_problem_is_listed_and_counted(tmp_path, runs):
    text = HEADER + "s.z1,phoned,2025-13-01,\ns.nope,contacted,2025-01-10,\n"
    with pytest.raises(FeedbackError) as err:
        validate(_file(tmp_path, text), runs)
    message = str(err.value)
    assert "3 problem(s) in 2 row(s); nothing imported" in message
    assert "row 1, outcome" in message and "row 1, outcome_date" in message
    assert "row 2, signal_id" in message


def test_encrypted_runs_need_the_keyring(tmp_path, runs):
    signals = next(runs.glob("*/signals.parquet"))
    signals.rename(signals.with_name("signals.parquet.enc"))
    with pytest.raises(lifecycle.HistoryUnavailable, match="no central keyring"):
        validate(_file(tmp_path, GOOD), runs)


def test_the_command_imports_and_prints_take_up_and_precision(tmp_path, runs, capsys):
    assert main(["feedback", "import", str(_file(tmp_path, GOOD)), "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "17 feedback row(s) imported" in out
    assert "zorgtoeslag" in out and "40.0%" in out and "66.7%" in out
    stats = json.loads((runs / "feedback" / "statistics.json").read_text())
    assert [s["scheme"] for s in stats["per_scheme"]] == ["huurtoeslag", "zorgtoeslag"]


def test_the_command_refuses_a_malformed_file_and_writes_nothing(tmp_path, runs, capsys):
    text, message = MALFORMED["an unknown signal"]
    assert main(["feedback", "import", str(_file(tmp_path, text)), "--runs", str(runs)]) == 2
    assert message in capsys.readouterr().err
    assert not (runs / "feedback").exists()


def test_a_runs_folder_that_does_not_exist_is_one_line_not_a_problem_per_row(
    tmp_path, runs, capsys
):
    """Else every signal id would be 'not a signal of any published run', and stats would
    print empty tables as if no feedback had come."""
    missing = tmp_path / "no-such-runs"
    path = str(_file(tmp_path, GOOD))
    for args in (["import", path], ["stats"]):
        assert main(["feedback", *args, "--runs", str(missing)]) == 2
        assert f"{missing}: output folder does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_a_bsn_typed_where_a_signal_id_belongs_is_not_quoted_back(tmp_path, runs, capsys):
    text = "signal_id,outcome,outcome_date\n111222333,contacted,2025-01-15\n"
    assert main(["feedback", "import", str(_file(tmp_path, text)), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "row 1, signal_id: <a number like a BSN, not shown> is not a signal" in err
    assert "111222333" not in err


def _rows(text: str, header: str) -> dict[str, list[str]]:
    """The table under `header` (its first column name) in printed text, by scheme."""
    lines = text.splitlines()
    at = [i for i, li in enumerate(lines) if li.startswith(header)][0]
    rows = {}
    for line in lines[at + 1 :]:
        if not line or line.split()[0] not in ("huurtoeslag", "zorgtoeslag"):
            break
        rows[line.split()[0]] = line.split()[1:]
    return rows


def test_stats_name_their_columns_and_show_coverage_and_declined(tmp_path, runs, capsys):
    _import(_file(tmp_path, GOOD), runs)
    assert main(["feedback", "stats", "--runs", str(runs)]) == 0
    text = capsys.readouterr().out
    coverage_header = "scheme                  signals  with feedback  coverage"
    assert coverage_header in text.splitlines()
    assert _rows(text, coverage_header) == {
        "huurtoeslag": ["3", "2", "66.7%"],  # h3 has no feedback
        "zorgtoeslag": ["6", "6", "100.0%"],
    }
    outcomes = (
        "scheme  contacted applied granted not entitled declined unreachable take-up precision"
    )
    (header,) = [li for li in text.splitlines() if li.split() == outcomes.split()]
    assert _rows(text, header) == {
        "huurtoeslag": ["1", "1", "1", "0", "0", "1", "100.0%", "100.0%"],
        "zorgtoeslag": ["5", "3", "2", "1", "1", "1", "40.0%", "66.7%"],
    }


def _without_config(monkeypatch, folder):
    monkeypatch.chdir(folder)
    for name in ("SIGNALS_CONFIG", "SIGNALS_PATHS_OUT", "SIGNALS_KEYS_CENTRAL_KEYRING"):
        monkeypatch.delenv(name, raising=False)


def test_the_runs_folder_comes_from_the_configuration(tmp_path, runs, capsys, monkeypatch):
    _without_config(monkeypatch, tmp_path)
    path = _file(tmp_path, GOOD)
    assert main(["feedback", "import", str(path)]) == 2
    assert "paths.out is not set" in capsys.readouterr().err
    assert main(["feedback", "stats"]) == 2
    assert "paths.out is not set" in capsys.readouterr().err
    (tmp_path / "signals.toml").write_text(f'[paths]\nout = "{runs}"\n')
    assert main(["feedback", "import", str(path)]) == 0
    assert "17 feedback row(s) imported" in capsys.readouterr().out
    assert main(["feedback", "stats"]) == 0
    assert _rows(capsys.readouterr().out, "scheme  ")["zorgtoeslag"] == ["6", "6", "100.0%"]


def test_encrypted_runs_ask_for_the_central_keyring(tmp_path, runs, capsys, monkeypatch):
    _without_config(monkeypatch, tmp_path)
    _import(_file(tmp_path, GOOD, "earlier.csv"), runs)  # before the signals were sealed
    signals = next(runs.glob("*/signals.parquet"))
    signals.rename(signals.with_name("signals.parquet.enc"))
    later = "signal_id,outcome,outcome_date\ns.z5,applied,2025-02-01\n"
    assert main(["feedback", "import", str(_file(tmp_path, later)), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "pass the central keyring (--key-file" in err
    assert "fatigue and lifecycle" not in err
    # Stats need no keyring; only the number of signals (coverage) does, and says so.
    assert main(["feedback", "stats", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert _rows(out, "scheme  ")["zorgtoeslag"] == ["-", "6", "-"]
    assert "the runs' signals are encrypted; pass the central keyring (--key-file" in out


def test_coverage_counts_only_the_kept_runs_signals(tmp_path, runs, capsys):
    """Feedback outlives a run whose data retention destroyed; its signals are no longer
    among the kept runs', so they must not count towards those runs' coverage (600%)."""
    _import(_file(tmp_path, GOOD), runs)
    first = runs / "2025-01-01-first"
    kept = pq.read_table(first / "signals.parquet").slice(0, 1)  # one zorgtoeslag signal
    second = runs / "2025-02-01-second"
    second.mkdir()
    manifest = {"run_id": second.name, "reference_date": "2025-02-01", "created_at": "y"}
    (second / "manifest.json").write_text(json.dumps(manifest))
    pq.write_table(kept, second / "signals.parquet")
    (first / "retention.json").write_text("{}")  # its data destroyed
    assert main(["feedback", "stats", "--runs", str(runs)]) == 0
    rows = _rows(capsys.readouterr().out, "scheme                  signals  with feedback")
    assert kept["scheme"][0].as_py() == "zorgtoeslag"
    assert rows["zorgtoeslag"] == ["1", "1", "100.0%"]
