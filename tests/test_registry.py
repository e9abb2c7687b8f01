"""Registries: names to code, duplicate names refused, unknown names listed, entries swapped for a while."""
import pytest

from cifarnet.registry import Registry, UnknownNameError


def test_register_get_and_the_errors():
    things = Registry("thing")
    things.register("a")(int)
    assert things.get("a") is int and "a" in things and list(things) == ["a"]
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(float)
    with pytest.raises(UnknownNameError, match="unknown thing 'b'; known: a"):
        things.get("b")


def test_an_entry_replaced_for_a_while_comes_back():
    things = Registry("thing")
    things.register("a")(int)
    with things.replaced("a", float), things.replaced("new", str):
        assert things.get("a") is float and things.get("new") is str
    assert things.get("a") is int and "new" not in things
    with pytest.raises(RuntimeError), things.replaced("a", bool):
        raise RuntimeError("the block failed")
    assert things.get("a") is int
