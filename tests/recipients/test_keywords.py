from __future__ import annotations

from varsel.recipients.keywords import render


def test_name_and_number_are_filled_in() -> None:
    text = "Dear $recipientName$, about $recipientNumber$: $recipientName$"
    assert render(text, name="Begge AS", number="312508729") == "Dear Begge AS, about 312508729: Begge AS"


def test_persons_have_an_empty_number_and_missing_names_are_empty() -> None:
    assert render("[$recipientNumber$][$recipientName$]", name=None, number=None) == "[][]"


def test_keywords_are_case_sensitive() -> None:
    assert render("$RecipientName$ $recipientname$", name="X", number="1") == "$RecipientName$ $recipientname$"


def test_html_bodies_get_the_name_escaped_plain_bodies_do_not() -> None:
    name = 'Smith & Sons <AS> "X"'
    assert render("<p>$recipientName$</p>", name=name, number=None, html_body=True) == (
        "<p>Smith &amp; Sons &lt;AS&gt; &quot;X&quot;</p>"
    )
    assert render("$recipientName$", name=name, number=None) == name


def test_a_name_is_not_expanded_twice_and_subjects_stay_on_one_line() -> None:
    from varsel.recipients.keywords import render_subject

    assert render("$recipientName$", name="$recipientNumber$", number="1") == "$recipientNumber$"
    assert render_subject("Hei $recipientName$", name="Ola\r\nBcc: x@example.com", number=None) == (
        "Hei Ola Bcc: x@example.com"
    )
