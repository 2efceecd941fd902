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


def test_atomic_path_writes_whole_file_with_normal_permissions(tmp_path) -> None:
    import os

    from anydepth.atomic import atomic_path

    dst = tmp_path / "sub" / "out.txt"
    with atomic_path(dst) as tmp:
        tmp.write_text("hello")
        assert not dst.exists()
    assert dst.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert dst.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(FileExistsError):
        with atomic_path(dst):
            pass
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "fail.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "fail.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sub"]  # no temporary left behind
