from __future__ import annotations

import pytest

from anydepth.registry import Registry


def test_register_get_and_errors() -> None:
    r: Registry = Registry("widget")
    r.add("alpha", 1)

    @r.register("beta")
    def beta() -> int:
        return 2

    assert r.get("alpha") == 1 and r.get("beta") is beta
    assert r.names() == ["alpha", "beta"] and "alpha" in r and len(r) == 2
    with pytest.raises(ValueError, match="already registered"):
        r.add("alpha", 3)
    with pytest.raises(KeyError, match="Did you mean 'alpha'"):
        r.get("alpah")
    with pytest.raises(KeyError, match="Valid choices: alpha, beta"):
        r.get("zzz")
