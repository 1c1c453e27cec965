"""Test List Editor entries (pure): validation, lists/<cc>.csv parsing and rewriting, the
changes log."""

from __future__ import annotations

import pytest

from oonibackend.jobs.citizenlab.lists import CATEGORIES, CATEGORY_CODES
from oonibackend.testlists import entries as E

HEADER = "url,category_code,category_description,date_added,source,notes\n"
# The shape of CitizenLab's files: minimal quoting, \n line ends, empty source/notes common.
GLOBAL_CSV = HEADER + (
    "http://www.anonymizer.com/,ANON,Anonymization and circumvention tools,2014-04-15,"
    "citizenlab,\n"
    "https://www.torproject.org/,ANON,Anonymization and circumvention tools,2014-04-15,"
    "citizenlab,\n"
    "https://www.reddit.com/,GRP,Social Networking,2017-04-12,,\n"
    "http://www.bbc.com/news,NEWS,News Media,2014-04-15,citizenlab,\n"
    'https://www.ushmm.org/,CULTR,Culture,2016-05-17,,"Holocaust museum, ""Never again"""\n'
    "https://www.who.int/,PUBH,Public Health,2020-03-17,OONI,Covid-19 information\n"
    "http://8.8.8.8/,HOST,Hosting and Blogging Platforms,2018-01-01,,IP address host\n"
    "https://www.facebook.com/,GRP,Social Networking,2014-04-15,citizenlab,"
    "Related to: https://facebook.com/\n"
)
IT_CSV = HEADER + (
    "http://www.casinoit.it/,GMB,Gambling,2017-04-12,,\n"
    "https://www.leggo.it/,NEWS,News Media,2017-04-12,,\n"
    "http://www.uaar.it/,REL,Religion,2017-04-12,,Unione degli Atei e degli Agnostici "
    "Razionalisti\n"
)


def entry(url="https://example.org/", cc="NEWS", date="2024-01-02", source="", notes=""):
    return {"url": url, "category_code": cc, "date_added": date, "source": source,
            "notes": notes}


def err(excinfo) -> str:
    return excinfo.value.err_str


# --- validation --------------------------------------------------------------------------------

def test_category_table_has_the_31_citizenlab_codes():
    assert set(CATEGORIES) == CATEGORY_CODES and len(CATEGORIES) == 31
    assert CATEGORIES["NEWS"] == "News Media"
    assert CATEGORIES["ANON"] == "Anonymization and circumvention tools"
    assert CATEGORIES["COMM"] == "E-commerce"


@pytest.mark.parametrize("value,cc", [("IT", "it"), ("it", "it"), ("Global", "global"),
                                      ("GLOBAL", "global"), (" us ", "us")])
def test_country_codes(value, cc):
    assert E.parse_cc(value) == cc


@pytest.mark.parametrize("value", ["ita", "i", "i1", "", None, 12, "../x", "x/", "zz.csv",
                                   "ıt", "globals"])
def test_bad_country_codes(value):
    with pytest.raises(E.EntryError) as e:
        E.parse_cc(value)
    assert err(e) == "err_invalid_country_code"


@pytest.mark.parametrize("url", [
    "https://x.org/", "http://www.example.com/path?q=1&r=2#frag", "HTTPS://EXAMPLE.COM/",
    "http://1.2.3.4/", "http://1.2.3.4:8080/x", "https://sub.domain.co.uk/a/b/c.html",
    "https://xn--80ak6aa92e.com/", "https://example.org/Россия",
])
def test_good_urls(url):
    E.check_url(url)


@pytest.mark.parametrize("url", [
    "https://x.org", "ftp://x.org/", "x.org/", "https:///x", "https://x/", " https://x.org/",
    "https://x.org/ ", "https://x.org/a\tb", "https://x.org/a\nb", "https://x.org/a\\b",
    "https://x.org/a b", "https://x.org:99999/", "https://-x.org/", "", "https://x.org?q=1",
    "javascript:alert(1)", "https://" + "a" * 2050 + ".org/",
])
def test_bad_urls(url):
    with pytest.raises(E.EntryError) as e:
        E.check_url(url)
    assert err(e) == "err_bad_url" and e.value.err_args == {"url": url}


def test_valid_entry_is_returned_with_exactly_its_keys():
    got = E.validate_entry(entry(notes="Sito, con \"virgolette\"", source="OONI"))
    assert got == entry(notes="Sito, con \"virgolette\"", source="OONI")
    assert tuple(sorted(got)) == E.ENTRY_KEYS


@pytest.mark.parametrize("value,code", [
    ({**entry(), "category_description": "News Media"}, "err_request_params"),
    ({k: v for k, v in entry().items() if k != "notes"}, "err_request_params"),
    ({**entry(), "notes": None}, "err_request_params"),
    ("https://example.org/", "err_request_params"),
    (entry(url="https://example.org"), "err_bad_url"),
    (entry(cc="XYZ"), "err_bad_category_code"),
    (entry(cc="news"), "err_bad_category_code"),
    (entry(date="2024-13-01"), "err_bad_date"),
    (entry(date="2024-1-2"), "err_bad_date"),
    (entry(date="2024-01-02T00:00:00"), "err_bad_date"),
    (entry(date="２０２４-01-02"), "err_bad_date"),
    (entry(notes="two\nlines"), "err_request_params"),
    (entry(source="x" * 2000), "err_request_params"),
])
def test_invalid_entries(value, code):
    with pytest.raises(E.EntryError) as e:
        E.validate_entry(value)
    assert err(e) == code


def test_old_entries_need_the_shape_only():
    # A legacy row that today's URL rules refuse must still be editable and deletable.
    old = entry(url="http://www.example.com", cc="NEWS", date="2014-4-1")
    assert E.old_entry(old) == old
    with pytest.raises(E.EntryError) as e:
        E.old_entry({"url": "http://x.org/"})
    assert err(e) == "err_request_params"


def test_optional():
    assert E.optional(None) is None and E.optional({}) is None and E.optional("") is None
    assert E.optional(entry()) == entry()


# --- list files -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    GLOBAL_CSV, IT_CSV, HEADER, IT_CSV.rstrip("\n"), IT_CSV.replace("\n", "\r\n"),
    IT_CSV + "\n", '"url",category_code,category_description,date_added,source,notes\n'
    '"https://a.org/",NEWS,"News Media",2020-01-01,,"multi\nline note"\n',
])
def test_round_trip_is_byte_exact(text):
    assert E.render_list(E.parse_list(text)) == text


def test_entries_of_a_list():
    got = E.parse_list(GLOBAL_CSV).entries()
    assert len(got) == 8
    assert got[4] == {"url": "https://www.ushmm.org/", "category_code": "CULTR",
                      "date_added": "2016-05-17", "source": "",
                      "notes": 'Holocaust museum, "Never again"'}
    assert all(tuple(sorted(e)) == E.ENTRY_KEYS for e in got)


def test_new_rows_are_written_like_citizenlab_writes_them():
    assert E.render_row(entry()) == "https://example.org/,NEWS,News Media,2024-01-02,,\n"
    assert E.render_row(entry(cc="ANON", notes='a "b", c')) == (
        'https://example.org/,ANON,Anonymization and circumvention tools,2024-01-02,,'
        '"a ""b"", c"\n')


@pytest.mark.parametrize("text", ["", "url,category_code\nhttps://a.org/,NEWS\n",
                                  "a,b,c,d,e,f\n", 'url,category_code,category_description,'
                                  'date_added,source,notes\n"https://a.org/,NEWS,x,y,z,"w\n'])
def test_bad_list_files(text):
    with pytest.raises(E.ListFileError):
        E.parse_list(text)


def test_append_touches_nothing_else():
    lf = E.parse_list(IT_CSV)
    got = E.render_list(E.apply_edit(lf, None, entry()))
    assert got == IT_CSV + "https://example.org/,NEWS,News Media,2024-01-02,,\n"
    # A file without a final newline gets one before the new row.
    got = E.render_list(E.apply_edit(E.parse_list(IT_CSV.rstrip("\n")), None, entry()))
    assert got == IT_CSV + "https://example.org/,NEWS,News Media,2024-01-02,,\n"
    got = E.render_list(E.apply_edit(E.parse_list(HEADER.rstrip("\n")), None, entry()))
    assert got == HEADER + "https://example.org/,NEWS,News Media,2024-01-02,,\n"


def test_replace_and_delete_in_place():
    lf = E.parse_list(IT_CSV)
    leggo = lf.entries()[1]
    new = {**leggo, "notes": "Quotidiano, Roma"}
    got = E.render_list(E.apply_edit(lf, leggo, new))
    assert got == IT_CSV.replace("https://www.leggo.it/,NEWS,News Media,2017-04-12,,\n",
                                 'https://www.leggo.it/,NEWS,News Media,2017-04-12,,'
                                 '"Quotidiano, Roma"\n')
    got = E.render_list(E.apply_edit(lf, leggo, None))
    assert got == IT_CSV.replace("https://www.leggo.it/,NEWS,News Media,2017-04-12,,\n", "")
    # CRLF files: untouched rows keep their CRLF.
    crlf = E.parse_list(IT_CSV.replace("\n", "\r\n"))
    got = E.render_list(E.apply_edit(crlf, leggo, None))
    assert got == IT_CSV.replace("\n", "\r\n").replace(
        "https://www.leggo.it/,NEWS,News Media,2017-04-12,,\r\n", "")


def test_replace_the_last_row_of_a_file_without_final_newline():
    lf = E.parse_list(IT_CSV.rstrip("\n"))
    last = lf.entries()[-1]
    got = E.render_list(E.apply_edit(lf, last, {**last, "category_code": "HUMR"}))
    assert got == IT_CSV.rstrip("\n").replace(",REL,Religion,", ",HUMR,Human Rights Issues,")


def test_exact_copies_of_a_deleted_row_go_too():
    row = "https://www.leggo.it/,NEWS,News Media,2017-04-12,,\n"
    lf = E.parse_list(IT_CSV + row)
    got = E.render_list(E.apply_edit(lf, lf.entries()[1], None))
    assert got == IT_CSV.replace(row, "")


def test_old_entry_not_in_the_list():
    lf = E.parse_list(IT_CSV)
    stale = {**lf.entries()[1], "notes": "changed meanwhile"}
    with pytest.raises(E.EntryError) as e:
        E.apply_edit(lf, stale, entry())
    assert err(e) == "err_cannot_update_list"


def test_duplicates_against_the_country_and_global_lists():
    it, gl = E.parse_list(IT_CSV), E.parse_list(GLOBAL_CSV)
    for url in ("https://www.leggo.it/", "https://www.reddit.com/"):
        with pytest.raises(E.EntryError) as e:
            E.edit_list("it", it, gl, None, entry(url=url))
        assert err(e) == "err_duplicate_url" and e.value.err_args == {"url": url}
    # Changing a row to another row's URL is a duplicate too...
    with pytest.raises(E.EntryError) as e:
        E.edit_list("it", it, gl, it.entries()[0], {**it.entries()[0],
                                                   "url": "https://www.leggo.it/"})
    assert err(e) == "err_duplicate_url"
    # ...keeping a row's URL is not, and in the global list only the global list counts.
    leggo = it.entries()[1]
    out = E.edit_list("it", it, gl, leggo, {**leggo, "notes": "x"})
    assert out.entries()[1]["notes"] == "x"
    with pytest.raises(E.EntryError) as e:
        E.edit_list("global", gl, gl, None, entry(url="https://www.who.int/"))
    assert err(e) == "err_duplicate_url"
    out = E.edit_list("global", gl, gl, None, entry(url="https://www.leggo.it/"))
    assert out.entries()[-1]["url"] == "https://www.leggo.it/"


# --- changes log ------------------------------------------------------------------------------

A, B, C = entry(url="https://a.org/"), entry(url="https://b.org/"), entry(url="https://c.org/")


def test_changes_add_delete_edit():
    ch = E.merge_changes({}, "it", None, A)
    assert ch == {"it": [{**A, "action": "add"}]}
    ch = E.merge_changes(ch, "it", B, C)  # an edit: delete B, add C
    assert ch == {"it": [{**A, "action": "add"}, {**B, "action": "delete"},
                         {**C, "action": "add"}]}
    ch2 = E.merge_changes(ch, "global", None, B)
    assert ch2["global"] == [{**B, "action": "add"}] and ch2["it"] == ch["it"]


def test_changes_cancel_out():
    assert E.merge_changes(E.merge_changes({}, "it", None, A), "it", A, None) == {}
    assert E.merge_changes(E.merge_changes({}, "it", A, None), "it", None, A) == {}
    # An edit undone by the reverse edit leaves nothing to propose.
    ch = E.merge_changes({}, "it", A, B)
    assert E.merge_changes(ch, "it", B, A) == {}
    # Editing an added entry again is a single add of the final value.
    ch = E.merge_changes(E.merge_changes({}, "it", None, A), "it", A, B)
    assert ch == {"it": [{**B, "action": "add"}]}
    # Other countries are untouched and the input is not modified.
    base = {"us": [{**C, "action": "delete"}]}
    ch = E.merge_changes(base, "it", None, A)
    assert base == {"us": [{**C, "action": "delete"}]} and ch["us"] == base["us"]


def test_parse_changes():
    ch = {"it": [{**A, "action": "add"}], "global": [{**B, "action": "delete"}]}
    assert E.parse_changes(ch) == ch
    for bad in ([], {"IT": []}, {"../x": []}, {"it": [A]}, {"it": [{**A, "action": "x"}]},
                {"it": {"a": 1}}):
        with pytest.raises(ValueError):
            E.parse_changes(bad)
