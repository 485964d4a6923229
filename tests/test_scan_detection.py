"""Event-based detection scores: exact counts on hand-made event lists, a maximum matching
(not a greedy one), the offset collar, reference CSVs read or refused with file and line."""

from __future__ import annotations

import pytest

from calm.data.loaders import DatasetError
from calm.evaluation.detection import Span, read_events, score_events

REFERENCE = [Span("a.wav", 1.0, 2.0, "bird"), Span("a.wav", 5.0, 6.0, "bird"), Span("a.wav", 3.0, 4.0, "frog"),
             Span("b.wav", 0.0, 1.0, "bird")]
FOUND = [Span("a.wav", 1.4, 2.2, "bird"),   # onset 0.4 s late: a hit
         Span("a.wav", 5.6, 6.0, "bird"),   # 0.6 s late: a false positive, and 5.0 is missed
         Span("a.wav", 3.5, 4.0, "frog"),   # exactly at the collar: a hit
         Span("a.wav", 8.0, 9.0, "frog"),   # nothing there
         Span("b.wav", 0.2, 1.0, "bird"),   # a hit
         Span("b.wav", 0.3, 1.0, "bird"),   # the same event twice: the second is a false positive
         Span("a.wav", 3.0, 4.0, "bird")]   # right time, wrong class: a false positive of bird


def test_exact_counts_and_scores():
    scores = score_events(FOUND, REFERENCE)
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (3, 4, 1)
    assert scores.overall.precision == 3 / 7 and scores.overall.recall == 0.75
    assert scores.overall.f1 == pytest.approx(2 * (3 / 7) * 0.75 / (3 / 7 + 0.75))  # 6/11
    bird, frog = scores.classes["bird"], scores.classes["frog"]
    assert (bird.tp, bird.fp, bird.fn) == (2, 3, 1) and (frog.tp, frog.fp, frog.fn) == (1, 1, 0)
    assert bird.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3)) and frog.f1 == pytest.approx(2 / 3)
    assert scores.macro_f1 == pytest.approx((bird.f1 + frog.f1) / 2)
    wider = score_events(FOUND, REFERENCE, collar=1.0)
    assert (wider.classes["bird"].tp, wider.classes["bird"].fn) == (3, 0)


def test_the_matching_is_maximal_not_greedy():
    reference = [Span("a", 1.4, 2.0, "x"), Span("a", 0.6, 1.0, "x")]
    found = [Span("a", 1.0, 2.0, "x"), Span("a", 1.5, 2.0, "x")]  # 1.0 could take 1.4 and leave 1.5 nothing
    assert score_events(found, reference).overall.tp == 2


def test_the_offset_collar():
    found, reference = [Span("a", 1.0, 3.0, "x")], [Span("a", 1.0, 2.0, "x")]
    assert score_events(found, reference).overall.tp == 1
    assert score_events(found, reference, offset_collar=0.5).overall.tp == 0
    assert score_events(found, reference, offset_collar=1.0).overall.tp == 1


def test_no_events_on_either_side_scores_zero():
    scores = score_events([], REFERENCE)
    assert (scores.overall.tp, scores.overall.fn, scores.overall.f1, scores.overall.precision) == (0, 4, 0.0, 0.0)
    assert score_events([], []).macro_f1 == 0.0


def test_reference_csv(tmp_path):
    (tmp_path / "refs.csv").write_text("file,onset,offset,label\nrec/a.wav,1.0,2.5,bird\nrec/b.wav,0,1,frog\n")
    spans = read_events(tmp_path / "refs.csv")
    assert spans == [Span(str((tmp_path / "rec/a.wav").resolve()), 1.0, 2.5, "bird"),
                     Span(str((tmp_path / "rec/b.wav").resolve()), 0.0, 1.0, "frog")]
    (tmp_path / "one.csv").write_text("onset,offset,label\n3,4,bird\n")
    assert read_events(tmp_path / "one.csv", file="x.wav") == [Span("x.wav", 3.0, 4.0, "bird")]
    with pytest.raises(DatasetError, match="one.csv:2: no 'file' column"):
        read_events(tmp_path / "one.csv")
    (tmp_path / "bad.csv").write_text("onset,offset,label\n3,2,bird\n")
    with pytest.raises(DatasetError, match=r"bad.csv:2: onset 3 and offset 2: need 0 <= onset <= offset"):
        read_events(tmp_path / "bad.csv", file="x.wav")
    (tmp_path / "nolabel.csv").write_text("onset,offset\n3,4\n")
    with pytest.raises(DatasetError, match=r"nolabel.csv:1: missing column\(s\) \['label'\]"):
        read_events(tmp_path / "nolabel.csv", file="x.wav")


def test_a_scan_is_scored_against_a_reference_csv(tmp_path):
    from calm.scanning.events import Event
    from calm.scanning.run import FileScan
    from calm.scanning.scoring import score_scan

    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    results = [FileScan(str(a), ["bird"], events=[Event(str(a), 1.2, 2.0, "bird", 0.9, 0.8)]),
               FileScan(str(b), ["bird"], error="no such file")]
    (tmp_path / "ref.csv").write_text("file,onset,offset,label\na.wav,1,2,bird\nb.wav,0,1,bird\nc.wav,0,1,bird\n")
    with pytest.warns(UserWarning, match="1 reference event.* not scanned .* e.g. .*c.wav"):
        scores = score_scan(results, tmp_path / "ref.csv")
    assert (scores.overall.tp, scores.overall.fp, scores.overall.fn) == (1, 0, 1)  # b.wav unreadable: its event missed
