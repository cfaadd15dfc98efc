import pytest

from harness_repo import InvalidHarnessInput, compose_message, parse_trailers, split_message
from harness_repo.message import SUBJECT_MAX, subject_of
from harness_repo.trailers import format_trailers, split_trailer_block


def test_format_then_parse_round_trips_in_order():
    trailers = {"Sia-Run": "r1", "Sia-Iteration": "3", "Sia-Event": "17"}
    text = format_trailers(trailers)
    assert text == "Sia-Run: r1\nSia-Iteration: 3\nSia-Event: 17\n"
    parsed = parse_trailers(f"Subject\n\nBody text.\n\n{text}")
    assert parsed == trailers
    assert list(parsed) == list(trailers)


def test_empty_mapping_formats_to_nothing():
    assert format_trailers({}) == ""


def test_only_the_last_paragraph_counts():
    message = "Subject\n\nNote: this looks like a trailer\n\nbut this paragraph is prose\n"
    assert parse_trailers(message) == {}


def test_subject_is_never_a_trailer_block():
    assert parse_trailers("Fix: the prompt\n") == {}


def test_paragraph_with_a_prose_line_is_not_trailers():
    assert parse_trailers("Subject\n\nSia-Run: r1\nand then prose\n") == {}


def test_continuation_lines_fold_into_the_previous_value():
    message = "Subject\n\nReviewed-by: someone\n  with a long name\nSia-Run: r1\n"
    assert parse_trailers(message) == {"Reviewed-by": "someone with a long name", "Sia-Run": "r1"}


def test_crlf_and_trailing_blank_lines_are_tolerated():
    assert parse_trailers("Subject\r\n\r\nSia-Run: r1\r\n\r\n\r\n") == {"Sia-Run": "r1"}


def test_split_keeps_text_before_the_block():
    text, trailers = split_trailer_block("Subject\n\nBody.\n\nSia-Run: r1\n")
    assert text == "Subject\n\nBody."
    assert trailers == {"Sia-Run": "r1"}


@pytest.mark.parametrize(
    "trailers",
    [
        {"Bad Key": "x"},
        {"-lead": "x"},
        {"Key": ""},
        {"Key": " padded"},
        {"Key": "two\nlines"},
        {"Key": 3},
    ],
)
def test_unrepresentable_trailers_are_rejected(trailers):
    with pytest.raises(InvalidHarnessInput):
        format_trailers(trailers)


def test_message_layout_short_rationale_has_no_body():
    message = compose_message("Tighten answer extraction", {"Sia-Run": "r1"})
    assert message == "Tighten answer extraction\n\nSia-Run: r1\n"
    assert split_message(message) == ("Tighten answer extraction", "", {"Sia-Run": "r1"})


def test_message_layout_multi_line_rationale_keeps_the_rest_as_body():
    rationale = "Tighten answer extraction\n\nThe model appends prose after the number.\n"
    message = compose_message(rationale, {"Sia-Run": "r1", "Sia-Event": "4"})
    subject, body, trailers = split_message(message)
    assert subject == "Tighten answer extraction"
    assert body == "The model appends prose after the number."
    assert trailers == {"Sia-Run": "r1", "Sia-Event": "4"}


def test_long_first_line_is_truncated_and_kept_whole_in_the_body():
    rationale = "word " * 30 + "end"
    subject = subject_of(rationale)
    assert len(subject) <= SUBJECT_MAX
    assert subject.endswith("…")
    _, body, _ = split_message(compose_message(rationale, {"Sia-Run": "r1"}))
    assert body == rationale.strip()


def test_rationale_that_ends_like_trailers_does_not_leak_into_them():
    rationale = "Subject\n\nSeen-in: episode 4"
    _, body, trailers = split_message(compose_message(rationale, {"Sia-Run": "r1"}))
    assert body == "Seen-in: episode 4"
    assert trailers == {"Sia-Run": "r1"}


def test_empty_rationale_is_rejected():
    with pytest.raises(InvalidHarnessInput, match="rationale"):
        compose_message(" \n\n", {"Sia-Run": "r1"})
