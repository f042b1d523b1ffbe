"""The embedded cluster: created on first use, reused with its data, stopped cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from service.embedded import EmbeddedCluster


@pytest.fixture
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Under /tmp with a traversable parent so the 'postgres' OS user can reach it as root.
    import os
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="diachiso-embedded-"))
    os.chmod(path, 0o755)
    return path / "var"


def test_cluster_is_created_reused_and_stopped(cluster_dir: Path) -> None:
    cluster = EmbeddedCluster(cluster_dir)
    assert cluster.start() is True
    assert cluster.start() is False  # already running: a second caller does not own it
    engine = create_engine(cluster.url())
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"))
    engine.dispose()
    cluster.stop()
    assert not cluster.is_running()

    again = EmbeddedCluster(cluster_dir)
    assert again.start() is True
    engine = create_engine(again.url())
    with engine.connect() as conn:
        assert conn.execute(text("SELECT v FROM kept")).scalar() == 42
    engine.dispose()
    again.stop()


def test_cluster_listens_only_on_a_socket_in_the_data_dir(cluster_dir: Path) -> None:
    cluster = EmbeddedCluster(cluster_dir)
    cluster.start()
    try:
        assert cluster.socket_dir.is_relative_to(cluster_dir)
        assert (cluster.socket_dir / ".s.PGSQL.5432").exists()
        engine = create_engine(cluster.url())
        with engine.connect() as conn:
            assert conn.execute(text("SHOW listen_addresses")).scalar() == ""
        engine.dispose()
    finally:
        cluster.stop()


def test_long_paths_fall_back_to_a_short_socket_dir(tmp_path: Path) -> None:
    cluster = EmbeddedCluster(tmp_path / ("x" * 120))
    assert len(str(cluster.socket_dir)) < 100
    assert cluster.socket_dir == EmbeddedCluster(tmp_path / ("x" * 120)).socket_dir
