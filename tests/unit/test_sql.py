"""sql rendering / splitting, type conversion and error mapping (no database needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from oonibackend.storage import DatabaseError, QueryLimitExceeded, sql, types
from oonibackend.storage.sql import append_settings, statement_kind

HOSTILE = ["it's", "back\\slash", "\\'", "'; DROP TABLE fastpath; --", "%(x)s", "ünïcødé ☃ 🌍",
           "tab\tnew\nline", "", "\\", "''", "a\x00b"]


@pytest.mark.parametrize("value, expected", [
    (None, "NULL"),
    (True, "1"),
    (False, "0"),
    (42, "42"),
    (-7, "-7"),
    (1.5, "1.5"),
    ("abc", "'abc'"),
    ("it's", "'it\\'s'"),
    ("a\\b", "'a\\\\b'"),
    (dt.date(2024, 1, 2), "toDate('2024-01-02')"),
    (dt.datetime(2024, 1, 2, 3, 4, 5), "toDateTime('2024-01-02 03:04:05')"),
    (dt.datetime(2024, 1, 2, 3, 4, 5, 120000), "toDateTime64('2024-01-02 03:04:05.120000', 6)"),
    (["a", "b'"], "['a','b\\'']"),
    ((1, 2), "[1,2]"),
    (b"raw", "'raw'"),
])
def test_literal(value, expected):
    assert sql.literal(value) == expected


def test_literal_aware_datetime_is_utc():
    t = dt.datetime(2024, 1, 2, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert sql.literal(t) == "toDateTime('2024-01-02 03:00:00')"


def test_literal_rejects_unknown_types():
    with pytest.raises(TypeError):
        sql.literal(object())


def test_render_substitutes_and_does_not_resubstitute():
    out = sql.render("SELECT %(a)s, %(b)s", {"a": "%(b)s", "b": "x'y"})
    assert out == "SELECT '%(b)s', 'x\\'y'"


def test_render_no_params_leaves_sql_alone():
    assert sql.render("SELECT '%(a)s'", None) == "SELECT '%(a)s'"


def test_render_missing_param():
    with pytest.raises(KeyError):
        sql.render("SELECT %(a)s", {"b": 1})


@pytest.mark.parametrize("s", HOSTILE)
def test_quote_str_stays_inside_literal(s):
    q = sql.quote_str(s)
    assert q.startswith("'") and q.endswith("'")
    body = q[1:-1]
    # every quote inside the literal is escaped: an odd run of backslashes precedes it
    i = 0
    while i < len(body):
        if body[i] == "\\":
            i += 2
            continue
        assert body[i] != "'", q
        i += 1
    # unescaping gives the original back
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    assert "".join(out) == s


@pytest.mark.parametrize("name", ["fastpath", "a_b1", "db.table", "_x"])
def test_ident_ok(name):
    assert sql.ident(name) == name


@pytest.mark.parametrize("name", ["", "1a", "a-b", "a b", "a;b", "a.b.c", "`a`", "a'"])
def test_ident_rejects(name):
    with pytest.raises(ValueError):
        sql.ident(name)


def test_split_statements():
    text = """
    -- a comment; with a semicolon
    CREATE TABLE a (x String DEFAULT ';');
    /* block; comment */ INSERT INTO a VALUES ('it\\'s; fine');
    SELECT "we;ird", `col;name` FROM a;;
    SELECT 1
    """
    out = sql.split_statements(text)
    assert out == [
        "CREATE TABLE a (x String DEFAULT ';')",
        "INSERT INTO a VALUES ('it\\'s; fine')",
        'SELECT "we;ird", `col;name` FROM a',
        "SELECT 1",
    ]


def test_split_statements_empty():
    assert sql.split_statements("  ;\n-- only a comment\n;") == []


def test_split_migration_file():
    from oonibackend.storage.migrate import available

    migs = available()
    assert migs and migs[0].version == 1
    stmts = migs[0].statements()
    assert any("CREATE TABLE IF NOT EXISTS fastpath" in s for s in stmts)
    assert all(s.strip() for s in stmts)


# ---- statement kinds and SETTINGS ----

@pytest.mark.parametrize("stmt, kind", [
    ("SELECT 1", "select"),
    ("  -- c\n/* x */ select 1", "select"),
    ("WITH 1 AS a SELECT a", "select"),
    ("(SELECT 1) UNION ALL (SELECT 2)", "select"),
    ("INSERT INTO t SELECT * FROM u", "insert_select"),
    ("INSERT INTO t (a) FORMAT JSONEachRow\n{\"a\": \"SELECT\"}", "insert"),
    ("-- c\ninsert INTO t VALUES ('SELECT')", "insert"),
    ("CREATE TABLE t (a String) ENGINE = Memory", "other"),
])
def test_statement_kind(stmt, kind):
    assert statement_kind(stmt) == kind


def test_append_settings():
    assert append_settings("SELECT 1;  ", {"max_execution_time": 3, "x_y": "a'b"}) == \
        "SELECT 1\nSETTINGS max_execution_time=3, x_y='a\\'b'"
    assert append_settings("SELECT 1 -- trailing comment", {"a": 1}).endswith("\nSETTINGS a=1")
    assert append_settings("CREATE TABLE x", {"a": 1}) == "CREATE TABLE x"
    assert append_settings("SELECT 1", None) == "SELECT 1"
    with pytest.raises(ValueError):
        append_settings("SELECT 1", {"a=1; DROP": 1})


# ---- types ----

@pytest.mark.parametrize("type_name, value, expected", [
    ("DateTime", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("DateTime('UTC')", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("DateTime", "0000-00-00 00:00:00", dt.datetime(1970, 1, 1)),
    ("DateTime64(3)", "2024-01-02 03:04:05.123", dt.datetime(2024, 1, 2, 3, 4, 5, 123000)),
    ("DateTime64(6, 'UTC')", "2024-01-02 03:04:05.000001", dt.datetime(2024, 1, 2, 3, 4, 5, 1)),
    ("Date", "2024-01-02", dt.date(2024, 1, 2)),
    ("Date", "0000-00-00", dt.date(1970, 1, 1)),
    ("UInt64", "18446744073709551615", 18446744073709551615),
    ("Int64", -5, -5),
    ("UInt128", "340282366920938463463374607431768211455", 2**128 - 1),
    ("Nullable(UInt64)", None, None),
    ("Nullable(DateTime)", "2024-01-02 03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5)),
    ("LowCardinality(String)", "x", "x"),
    ("LowCardinality(Nullable(String))", None, None),
    ("FixedString(4)", "ab\x00\x00", "ab"),
    ("FixedString(4)", b"ab\x00\x00", "ab"),
    ("Array(FixedString(2))", ["IT", "D\x00"], ["IT", "D"]),
    ("Array(Nullable(DateTime))", ["2024-01-02 03:04:05", None],
     [dt.datetime(2024, 1, 2, 3, 4, 5), None]),
    ("Array(Array(UInt64))", [["1"], ["2", "3"]], [[1], [2, 3]]),
    ("Array(String)", ("a", "b"), ["a", "b"]),
    ("Float32", 1, 1.0),
    ("Float64", "inf", float("inf")),
    ("Enum8('nat' = 1, 'isp' = 2)", "nat", "nat"),
    ("Tuple(UInt64, String)", ["1", "a"], [1, "a"]),
    ("Tuple(a UInt64, b DateTime)", {"a": "1", "b": "2024-01-02 03:04:05"},
     [1, dt.datetime(2024, 1, 2, 3, 4, 5)]),
    ("Map(String, UInt64)", {"a": "1"}, {"a": 1}),
    ("IPv4", "1.2.3.4", "1.2.3.4"),
    ("Bool", True, True),
    ("Decimal(9, 2)", 1.5, 1.5),
])
def test_converter(type_name, value, expected):
    conv = types.converter(type_name)
    assert (conv(value) if conv else value) == expected


def test_converter_native_values():
    aware = dt.datetime(2024, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert types.converter("DateTime('Europe/Rome')")(aware) == dt.datetime(2024, 1, 1)
    assert types.converter("Date")(dt.date(2024, 1, 1)) == dt.date(2024, 1, 1)
    import uuid

    u = uuid.UUID(int=1)
    assert types.converter("UUID")(u) == str(u)


def test_parse_json_compact():
    body = b"""{"meta": [{"name": "a", "type": "UInt64"}, {"name": "t", "type": "DateTime"},
        {"name": "n", "type": "Nullable(String)"}],
        "data": [["1", "2024-01-02 03:04:05", null], [2, "2024-01-02 03:04:06", "x"]],
        "rows": 2, "statistics": {"elapsed": 0.5, "rows_read": 10, "bytes_read": 100}}"""
    rows, stats = types.parse_json_compact(body)
    assert rows == [
        {"a": 1, "t": dt.datetime(2024, 1, 2, 3, 4, 5), "n": None},
        {"a": 2, "t": dt.datetime(2024, 1, 2, 3, 4, 6), "n": "x"},
    ]
    assert stats == {"rows_read": 10, "bytes_read": 100, "elapsed": 0.5}


def test_json_each_row():
    rows = [
        {"a": "x'\\", "t": dt.datetime(2024, 1, 2, 3, 4, 5), "b": True, "extra": 1},
        {"a": "y", "t": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
         "d": dt.date(2024, 1, 2), "l": ("p", "q")},
    ]
    out = types.json_each_row(rows, ["a", "t", "b", "d", "l"])
    lines = out.decode().splitlines()
    assert lines == [
        '{"a":"x\'\\\\","t":"2024-01-02 03:04:05","b":1}',
        '{"a":"y","t":"2024-01-02 03:04:05.000006","d":"2024-01-02","l":["p","q"]}',
    ]


@pytest.mark.parametrize("text, cls, msg", [
    ("Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)\nstack",
     DatabaseError, "Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)"),
    ("Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 1 seconds, "
     "e.what() = DB::Exception\n", QueryLimitExceeded,
     "Code: 159, DB::Exception: Timeout exceeded: elapsed 1 seconds"),
    ("Code: 158. DB::Exception: Limit for rows exceeded", QueryLimitExceeded, None),
    ("Code: 307. DB::Exception: Limit for bytes exceeded", QueryLimitExceeded, None),
    ("something odd", DatabaseError, "something odd"),
])
def test_classify(text, cls, msg):
    e = types.classify(text)
    assert type(e) is cls
    if msg:
        assert str(e) == msg
