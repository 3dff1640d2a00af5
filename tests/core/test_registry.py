from __future__ import annotations

import pytest

from imageloader.errors import InvalidImageIdError, UnknownSchemeError
from imageloader.registry import LoaderRegistry, split_scheme

from .helpers import CountingLoader


def test_scheme_is_text_before_first_colon() -> None:
    assert split_scheme("wadors:https://h/x:y") == ("wadors", "https://h/x:y")
    assert split_scheme("noscheme") == ("", "noscheme")


@pytest.mark.parametrize("bad", ["", "   ", None, 12, b"wadors:x"])
def test_invalid_image_ids(bad: object) -> None:
    with pytest.raises(InvalidImageIdError):
        split_scheme(bad)


def test_unknown_scheme_names_scheme_and_image_id() -> None:
    registry = LoaderRegistry()
    with pytest.raises(UnknownSchemeError) as info:
        registry.resolve("zzz:thing/1")
    assert info.value.scheme == "zzz"
    assert info.value.image_id == "zzz:thing/1"
    assert "zzz" in str(info.value) and "zzz:thing/1" in str(info.value)


def test_register_replace_and_fallback() -> None:
    registry = LoaderRegistry()
    a, b, fallback = CountingLoader(), CountingLoader(), CountingLoader()
    registry.register("s", a)
    assert registry.resolve("s:1") is a
    registry.register("s", b)
    assert registry.resolve("s:1") is b
    assert registry.register_unknown(fallback) is None
    assert registry.resolve("other:1") is fallback
    assert registry.register_unknown(None) is fallback
    with pytest.raises(UnknownSchemeError):
        registry.resolve("other:1")
    assert registry.unregister("s") is b
    assert "s" not in registry.schemes
    with pytest.raises(ValueError, match="invalid scheme"):
        registry.register("a:b", a)
    with pytest.raises(TypeError):
        registry.register("x", "not callable")  # type: ignore[arg-type]
