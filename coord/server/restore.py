"""``coord-server snapshot restore`` and ``coord-server snapshot status``: offline tools for coord snapshot files.

Restore creates the data dir of one member of a NEW cluster whose state machine is a saved snapshot (``etcdctl
snapshot save`` against coord-server writes one), with the semantics of ``etcdctl snapshot restore``::

    coord-server snapshot restore backup.snapshot --name m0 --data-dir m0.coord \\
        --initial-cluster m0=http://10.0.0.1:2380,m1=http://10.0.0.2:2380,m2=http://10.0.0.3:2380 \\
        --initial-cluster-token restored-1 --initial-advertise-peer-urls http://10.0.0.1:2380

Run it once per member (same file, same --initial-cluster and token, each member's own --name and peer URL), then
start ``coord-server`` on each data dir with the same flags: the members form the new cluster with the data. The
snapshot's keys (with their whole kept history and revisions), leases, auth users and roles and alarms are kept; its
member table, member and cluster ids are discarded: the new cluster's come from the flags, as for a fresh cluster.

The file's sha256 is checked before anything is written, and the data dir appears only complete (it is built beside
the target and renamed into place), so a failed restore leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from coord.server.bootstrap import BootstrapError, bootstrap_new_cluster, check_initial_cluster
from coord.server.config import ServerConfig
from coord.server.peer.snapshot import install_state
from coord.server.snapshot_file import SnapshotFileError, SnapshotInfo, read_snapshot
from coord.server.storage import Backend

# Address space for the restored store (not disk): as much as coord-server maps with the default quota.
_MAP_SIZE = 2 * 1024**3 * 2 + 256 * 1024**2
_RECORDS = "restore.records"


class RestoreError(RuntimeError):
    """The restore was refused before anything was written (the message says why)."""


@dataclass(frozen=True)
class Restored:
    """What a restore produced: the snapshot's header, and the new member and cluster ids."""

    snapshot: SnapshotInfo
    member_id: int
    cluster_id: int
    data_dir: Path


def restore(
    snapshot: Path,
    data_dir: Path,
    *,
    name: str,
    initial_cluster: str,
    initial_cluster_token: str,
    initial_advertise_peer_urls: list[str],
) -> Restored:
    """Create ``data_dir`` for member ``name`` of a new cluster holding the state machine of ``snapshot``.

    Raises RestoreError when ``data_dir`` exists or the cluster flags are inconsistent, SnapshotFileError when the
    file is not a (sound) coord snapshot, OSError on a file system failure. Nothing is left behind on error.
    """
    if data_dir.exists():
        raise RestoreError(f'data-dir "{data_dir}" exists')
    config = ServerConfig(
        name=name, initial_cluster=initial_cluster, initial_advertise_peer_urls=initial_advertise_peer_urls
    )
    try:
        initial = config.initial_members()
        check_initial_cluster(initial, name, initial_advertise_peer_urls)
    except (ValueError, BootstrapError) as exc:
        raise RestoreError(str(exc)) from None
    building = data_dir.with_name(data_dir.name + ".restoring")
    shutil.rmtree(building, ignore_errors=True)  # a leftover of an interrupted restore
    try:
        building.mkdir(parents=True)
        records = building / _RECORDS
        with open(records, "wb") as out:
            info = read_snapshot(snapshot, out)
        backend = Backend(building, map_size=_MAP_SIZE)
        try:
            with backend.write() as txn:
                try:
                    install_state(backend, txn, records)
                except ValueError as exc:  # the checksum matched, so the writer produced bad records
                    raise SnapshotFileError(f"{snapshot}: unreadable snapshot records ({exc})") from None
                # The old cluster's members go; the new cluster's come from the flags.
                txn.drop(backend.members, delete=False)
                new = bootstrap_new_cluster(backend, txn, initial, name, initial_cluster_token)
        finally:
            backend.close()
        records.unlink()
        building.rename(data_dir)
        _fsync_dir(data_dir.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return Restored(info, new.member_id, new.cluster_id, data_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parser() -> argparse.ArgumentParser:
    d = ServerConfig()
    p = argparse.ArgumentParser(prog="coord-server snapshot", description="Work with coord snapshot files.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser(
        "restore",
        help="create a member's data dir of a new cluster from a snapshot file",
        description="Create the data dir of a member of a NEW cluster whose data is the snapshot's (as etcdctl "
        "snapshot restore does). Run once per member with the same --initial-cluster and token.",
    )
    r.add_argument("file", type=Path, help="the snapshot file (written by etcdctl snapshot save against coord-server)")
    r.add_argument("--name", default=d.name, help="this member's name")
    r.add_argument("--data-dir", type=Path, default=None, help="the data dir to create (default: ./<name>.coord)")
    r.add_argument("--initial-cluster", default="", help="name=peerURL,... of the new cluster's members")
    r.add_argument("--initial-cluster-token", default=d.initial_cluster_token, help="the new cluster's token")
    r.add_argument(
        "--initial-advertise-peer-urls",
        default=",".join(d.initial_advertise_peer_urls),
        help="this member's peer URLs, as listed in --initial-cluster",
    )
    s = sub.add_parser("status", help="check a snapshot file and print what it holds")
    s.add_argument("file", type=Path)
    s.add_argument("-w", "--write-out", choices=["simple", "json"], default="simple")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``coord-server snapshot ...``; returns the exit status (1 with ``Error: ...`` on stderr)."""
    args = parser().parse_args(argv)
    try:
        if args.command == "restore":
            urls = [u.strip() for u in args.initial_advertise_peer_urls.split(",") if u.strip()]
            done = restore(
                args.file,
                args.data_dir or Path(f"{args.name}.coord"),
                name=args.name,
                initial_cluster=args.initial_cluster,
                initial_cluster_token=args.initial_cluster_token,
                initial_advertise_peer_urls=urls,
            )
            print(
                f"Restored snapshot {args.file} (revision {done.snapshot.revision}) into {done.data_dir}: member "
                f"{args.name} ({done.member_id:x}) of new cluster {done.cluster_id:x}"
            )
            return 0
        info = read_snapshot(args.file)
    except (RestoreError, SnapshotFileError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.write_out == "json":
        print(
            json.dumps(
                {
                    "formatVersion": info.format_version,
                    "revision": info.revision,
                    "compactRevision": info.compact_revision,
                    "appliedIndex": info.applied_index,
                    "clusterID": info.cluster_id,
                    "memberID": info.member_id,
                    "totalSize": info.size,
                }
            )
        )
    else:
        print(f"revision {info.revision}, compact revision {info.compact_revision}, {info.size} bytes, sha256 ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
