"""Key ids, masks and scrubbing: what may be shown of a key."""

from __future__ import annotations

from mcp_keygate.keys import ApiKey, key_id_for, mask_for, scrub

SECRET = "sk-proj-Zq8vN3kP0aL7mW2xR5tY9uB4cD6eF1gH"


def test_key_id_is_stable_and_reveals_nothing():
    assert key_id_for("openai", SECRET) == key_id_for("openai", SECRET)
    assert key_id_for("openai", SECRET) != key_id_for("groq", SECRET)
    kid = key_id_for("openai", SECRET)
    assert kid.startswith("openai:") and len(kid) == len("openai:") + 6
    assert not any(SECRET[i : i + 4] in kid for i in range(len(SECRET) - 3))


def test_mask_shows_at_most_four_characters():
    assert mask_for(SECRET) == "…F1gH"
    assert mask_for("short") == "…t"
    assert mask_for("abc") == "…"
    assert mask_for("") == "(none)"


def test_repr_and_str_never_show_the_secret():
    key = ApiKey.create("openai", SECRET, 0)
    assert SECRET not in repr(key) and SECRET not in str(key)
    assert SECRET[:12] not in repr(key)


def test_scrub_removes_partial_echoes():
    text = f"Incorrect API key provided: {SECRET[:10]}…{SECRET[-4:]}. Also {SECRET[5:20]} and the whole {SECRET}."
    cleaned = scrub(text, [SECRET])
    for i in range(len(SECRET) - 7):
        assert SECRET[i : i + 8] not in cleaned


def test_scrub_redacts_key_shaped_strings_it_was_not_told_about():
    cleaned = scrub("failed with sk-abcdefghijklmnopqrstu and AIzaSyA1234567890abcdefghijkl", [])
    assert "abcdefghijklmnop" not in cleaned and "AIzaSyA1234567890" not in cleaned


def test_scrub_leaves_ordinary_text():
    assert scrub("rate limit reached, try again in 30s", [SECRET]) == "rate limit reached, try again in 30s"


def test_ids_stay_unique_in_a_huge_pool():
    from mcp_keygate.keys.secret import key_id_for, keys_for

    secrets = [f"sk-test-{i:07d}-abcdefgh" for i in range(100_000)]
    keys = keys_for("p", secrets)
    assert len({k.key_id for k in keys}) == 100_000
    assert sum(len(k.key_id) > len("p:") + 6 for k in keys) < 1_000  # only colliding ones grow
    assert keys[0].key_id == key_id_for("p", secrets[0]) or len(keys[0].key_id) == 18
