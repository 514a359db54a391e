"""Read BVH motion capture files (plain or gzip) into arrays, and run their forward kinematics."""

from __future__ import annotations

import gzip
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from p2m.errors import P2MError

logger = logging.getLogger(__name__)

#: CMU ASF length unit in metres (1 unit = 1/0.45 inch), the unit of the CMU BVH conversions.
CMU_UNIT_M = 0.0254 / 0.45

_ROTATIONS = ("Xrotation", "Yrotation", "Zrotation")
_POSITIONS = ("Xposition", "Yposition", "Zposition")


class BVHError(P2MError):
    """A BVH file that cannot be read: the message names the file, the line and what was expected."""


@dataclass(frozen=True)
class BVHSkeleton:
    """The HIERARCHY of a BVH file.

    Joints are listed in file order, so a parent always comes before its children.

    Attributes:
        names: (J,) joint names.
        parents: (J,) int, index of the parent joint, -1 for the root.
        offsets: (J, 3) float64, OFFSET of each joint from its parent, in file units.
        channels: per joint, its channel names in file order (e.g. ``("Zrotation", "Yrotation", "Xrotation")``).
        end_parents: (E,) int, the joint each ``End Site`` hangs from.
        end_offsets: (E, 3) float64, the End Site OFFSETs, in file units.
    """

    names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    end_parents: np.ndarray
    end_offsets: np.ndarray

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def index(self, name: str) -> int:
        """Index of the joint called ``name``; ``KeyError`` listing the joints if there is none."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"no joint {name!r} in the BVH skeleton; joints: {', '.join(self.names)}"
            ) from None

    def children(self, j: int) -> list[int]:
        """Indices of the joints whose parent is ``j``."""
        return [int(c) for c in np.flatnonzero(self.parents == j)]

    def rest_positions(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint and End Site positions with every channel at zero (the file's rest pose), in file units.

        Returns:
            joints (J, 3) and end sites (E, 3), root at the origin.
        """
        pos = np.zeros((self.num_joints, 3))
        for j in range(1, self.num_joints):
            pos[j] = pos[self.parents[j]] + self.offsets[j]
        return pos, pos[self.end_parents] + self.end_offsets


@dataclass
class BVHMotion:
    """A BVH file: its skeleton and its MOTION block.

    Attributes:
        path: the file it came from (for messages).
        skeleton: the hierarchy.
        frame_time: seconds per frame.
        values: (T, C) float64, the raw channel values, in file order (degrees and file units).
    """

    path: str
    skeleton: BVHSkeleton
    frame_time: float
    values: np.ndarray
    _slices: list[slice] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        start, self._slices = 0, []
        for chans in self.skeleton.channels:
            self._slices.append(slice(start, start + len(chans)))
            start += len(chans)

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time if self.frame_time > 0 else float("nan")

    def joint_values(self, j: int) -> np.ndarray:
        """(T, c) channel values of joint ``j`` in its file order."""
        return self.values[:, self._slices[j]]

    def local_rotations(
        self, frames: np.ndarray | slice | None = None, joints: list[int] | None = None
    ) -> np.ndarray:
        """Local rotation of every joint: the product of its rotation channels in file order.

        Standard BVH (column vectors): channels ``Zrotation Yrotation Xrotation`` give ``Rz(z) @ Ry(y) @ Rx(x)``.

        Args:
            frames: which frames (index array or slice); all when None.
            joints: which joints (their order in the result); all when None.

        Returns:
            (T, J, 3, 3) float64 rotation matrices; identity for joints without rotation channels.
        """
        vals = self.values if frames is None else self.values[frames]
        t = vals.shape[0]
        which = list(range(self.skeleton.num_joints)) if joints is None else list(joints)
        out = np.broadcast_to(np.eye(3), (t, len(which), 3, 3)).copy()
        for o, j in enumerate(which):
            chans = self.skeleton.channels[j]
            sl = self._slices[j]
            rot = None
            for k, name in enumerate(chans):
                if name not in _ROTATIONS:
                    continue
                r = axis_rotation(_ROTATIONS.index(name), np.deg2rad(vals[:, sl.start + k]))
                rot = r if rot is None else rot @ r
            if rot is not None:
                out[:, o] = rot
        return out

    def local_translations(self, frames: np.ndarray | slice | None = None) -> np.ndarray:
        """Local translation of every joint from its parent: its OFFSET, with position channels replacing the
        matching OFFSET component (the usual reading, e.g. Blender's: position channels are absolute).

        Returns:
            (T, J, 3) float64, file units. For the root this is its world position.
        """
        vals = self.values if frames is None else self.values[frames]
        out = np.broadcast_to(self.skeleton.offsets, (vals.shape[0], self.skeleton.num_joints, 3)).copy()
        for j, chans in enumerate(self.skeleton.channels):
            sl = self._slices[j]
            for k, name in enumerate(chans):
                if name in _POSITIONS:
                    out[:, j, _POSITIONS.index(name)] = vals[:, sl.start + k]
        return out

    def forward_kinematics(
        self, frames: np.ndarray | slice | None = None, scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World joint positions and orientations: ``x_c = x_p + R_p @ t_c``, ``R_c = R_p @ L_c``.

        Args:
            frames: which frames; all when None.
            scale: multiplies every length (e.g. :data:`CMU_UNIT_M` to get metres from CMU files).

        Returns:
            positions (T, J, 3), global rotations (T, J, 3, 3) and End Site positions (T, E, 3), in the file's
            axes (Y up for CMU files) and file units times ``scale``.
        """
        return forward_kinematics(
            self.skeleton, self.local_rotations(frames), self.local_translations(frames), scale
        )


def axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about a coordinate axis.

    Args:
        axis: 0, 1, 2 for X, Y, Z.
        angle: (...,) radians.

    Returns:
        (..., 3, 3) float64.
    """
    angle = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros((*angle.shape, 3, 3))
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., k, k] = c
    out[..., i, k] = -s
    out[..., k, i] = s
    return out


def forward_kinematics(
    skeleton: BVHSkeleton, local_rotations: np.ndarray, local_translations: np.ndarray, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chain local transforms from the root: one vectorised step per joint, over all frames at once.

    Args:
        skeleton: gives parents and End Sites.
        local_rotations: (T, J, 3, 3).
        local_translations: (T, J, 3) in file units, the root's being its world position.
        scale: multiplies every length of the result.

    Returns:
        positions (T, J, 3), global rotations (T, J, 3, 3), End Site positions (T, E, 3).
    """
    pos = np.empty_like(local_translations, dtype=np.float64)
    rot = np.empty_like(local_rotations, dtype=np.float64)
    pos[:, 0], rot[:, 0] = local_translations[:, 0], local_rotations[:, 0]
    for j in range(1, skeleton.num_joints):
        p = skeleton.parents[j]
        pos[:, j] = pos[:, p] + np.einsum("tij,tj->ti", rot[:, p], local_translations[:, j])
        rot[:, j] = rot[:, p] @ local_rotations[:, j]
    ends = pos[:, skeleton.end_parents] + np.einsum(
        "teij,ej->tei", rot[:, skeleton.end_parents], skeleton.end_offsets
    )
    return pos * scale, rot, ends * scale


# ------------------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------------------


def _open_text(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise BVHError(f"{path}: file not found") from exc
    except OSError as exc:
        raise BVHError(f"{path}: cannot read: {exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise BVHError(f"{path}: broken gzip stream: {exc}") from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Tokens:
    """Whitespace tokens of the HIERARCHY part with their line numbers."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path = path
        self.items: list[tuple[str, int]] = []
        self.motion_line: int | None = None
        for no, line in enumerate(lines, start=1):
            words = line.split()
            if words and words[0] == "MOTION":
                self.motion_line = no
                break
            self.items.extend((w, no) for w in words)
        self.pos = 0

    def error(self, msg: str, line: int | None = None) -> BVHError:
        if line is None:
            line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 1
        return BVHError(f"{self.path}: line {line}: {msg}")

    def next(self, expected: str) -> tuple[str, int]:
        if self.pos >= len(self.items):
            last = self.items[-1][1] if self.items else 1
            raise self.error(f"unexpected end of HIERARCHY, expected {expected}", last)
        tok = self.items[self.pos]
        self.pos += 1
        return tok

    def expect(self, word: str) -> int:
        tok, line = self.next(repr(word))
        if tok != word:
            raise self.error(f"expected {word!r}, found {tok!r}", line)
        return line

    def number(self, what: str) -> float:
        tok, line = self.next(what)
        try:
            return float(tok)
        except ValueError:
            raise self.error(f"expected a number ({what}), found {tok!r}", line) from None


def _parse_hierarchy(tk: _Tokens) -> BVHSkeleton:
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_parents: list[int] = []
    end_offsets: list[list[float]] = []

    tk.expect("HIERARCHY")
    tok, line = tk.next("'ROOT'")
    if tok != "ROOT":
        raise tk.error(f"expected 'ROOT', found {tok!r}", line)

    def offset(owner: str) -> list[float]:
        tk.expect("OFFSET")
        return [tk.number(f"OFFSET {a} of {owner}") for a in "xyz"]

    def joint(parent: int) -> None:
        name, _ = tk.next("a joint name")
        if name in names:
            raise tk.error(f"joint name {name!r} appears twice")
        tk.expect("{")
        idx = len(names)
        names.append(name)
        parents.append(parent)
        offsets.append(offset(name))
        ch_tok, ch_line = tk.next("'CHANNELS'")
        if ch_tok != "CHANNELS":
            raise tk.error(f"expected 'CHANNELS' for joint {name!r}, found {ch_tok!r}", ch_line)
        count_tok, _ = tk.next("a channel count")
        try:
            count = int(count_tok)
        except ValueError:
            raise tk.error(
                f"expected a channel count for joint {name!r}, found {count_tok!r}", ch_line
            ) from None
        chans = []
        while tk.pos < len(tk.items) and tk.items[tk.pos][1] == ch_line:
            chans.append(tk.next("a channel name")[0])
        if len(chans) != count:
            raise tk.error(
                f"joint {name!r}: CHANNELS declares {count} channels but lists {len(chans)}", ch_line
            )
        for c in chans:
            if c not in _ROTATIONS + _POSITIONS:
                raise tk.error(
                    f"joint {name!r}: unknown channel {c!r}, expected one of {', '.join(_POSITIONS + _ROTATIONS)}",
                    ch_line,
                )
        channels.append(tuple(chans))
        while True:
            tok, line = tk.next("'JOINT', 'End Site' or '}'")
            if tok == "}":
                return
            if tok == "JOINT":
                joint(idx)
            elif tok == "End":
                tk.expect("Site")
                tk.expect("{")
                end_parents.append(idx)
                end_offsets.append(offset(f"the End Site of {name}"))
                tk.expect("}")
            else:
                raise tk.error(
                    f"in joint {name!r}: expected 'JOINT', 'End Site' or '}}', found {tok!r}", line
                )

    joint(-1)
    if tk.pos < len(tk.items):
        tok, line = tk.items[tk.pos]
        raise tk.error(f"expected 'MOTION' after the root joint's closing brace, found {tok!r}", line)
    return BVHSkeleton(
        names=tuple(names),
        parents=np.asarray(parents, dtype=np.int64),
        offsets=np.asarray(offsets, dtype=np.float64).reshape(-1, 3),
        channels=tuple(channels),
        end_parents=np.asarray(end_parents, dtype=np.int64),
        end_offsets=np.asarray(end_offsets, dtype=np.float64).reshape(-1, 3),
    )


def _header_value(path: Path, lines: list[str], no: int, key: str) -> str:
    """The value after ``key`` on line ``no`` (1-based), e.g. ``Frames:`` -> ``"344"``."""
    if no > len(lines):
        raise BVHError(f"{path}: line {no}: unexpected end of file, expected '{key} ...'")
    text = lines[no - 1].strip()
    if not text.startswith(key):
        raise BVHError(f"{path}: line {no}: expected '{key} ...', found {text[:60]!r}")
    return text[len(key) :].strip()


def read_bvh(path: str | os.PathLike) -> BVHMotion:
    """Read a BVH file, plain or gzip-compressed (detected from its first bytes, whatever its name).

    Every motion line must hold exactly one value per declared channel and the number of motion lines must
    equal the ``Frames:`` header (blank lines at the end are allowed).

    Args:
        path: the ``.bvh`` or ``.bvh.gz`` file.

    Returns:
        The parsed :class:`BVHMotion`.

    Raises:
        BVHError: naming the file, the line and what was expected.
    """
    p = Path(path)
    lines = _open_text(p).splitlines()
    tk = _Tokens(p, lines)
    skeleton = _parse_hierarchy(tk)
    if tk.motion_line is None:
        raise BVHError(f"{p}: line {len(lines)}: no 'MOTION' section after the HIERARCHY")
    m = tk.motion_line
    frames_txt = _header_value(p, lines, m + 1, "Frames:")
    try:
        n_frames = int(frames_txt)
    except ValueError:
        raise BVHError(f"{p}: line {m + 1}: expected an integer frame count, found {frames_txt!r}") from None
    time_txt = _header_value(p, lines, m + 2, "Frame Time:")
    try:
        frame_time = float(time_txt)
    except ValueError:
        raise BVHError(f"{p}: line {m + 2}: expected a number of seconds, found {time_txt!r}") from None
    if n_frames < 0 or not frame_time > 0:
        raise BVHError(
            f"{p}: line {m + 1}: Frames must be >= 0 and Frame Time > 0, got {n_frames} and {frame_time}"
        )

    first = m + 2  # 0-based index of the first motion line
    body = lines[first:]
    while body and not body[-1].strip():
        body.pop()
    n_chan = skeleton.num_channels
    rows = [ln.split() for ln in body]
    for i, row in enumerate(rows):
        if len(row) != n_chan:
            what = "an empty line" if not row else f"{len(row)} values"
            raise BVHError(
                f"{p}: line {first + i + 1}: motion frame {i} has {what}, expected {n_chan} "
                f"(the number of channels declared in the HIERARCHY)"
            )
    if len(rows) != n_frames:
        raise BVHError(
            f"{p}: line {first + len(rows)}: the file has {len(rows)} motion lines but its header "
            f"(line {m + 1}) says Frames: {n_frames}"
        )
    try:
        values = np.array([v for row in rows for v in row], dtype=np.float64).reshape(n_frames, n_chan)
    except ValueError:
        for i, row in enumerate(rows):
            for k, v in enumerate(row):
                try:
                    float(v)
                except ValueError:
                    raise BVHError(
                        f"{p}: line {first + i + 1}: value {k + 1} ({v!r}) is not a number"
                    ) from None
        raise
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values).all(1))[0])
        raise BVHError(f"{p}: line {first + bad + 1}: a motion value is not finite (nan or inf)")
    logger.debug(
        "read %s: %d joints, %d frames at %.3g fps", p, skeleton.num_joints, n_frames, 1 / frame_time
    )
    return BVHMotion(path=str(p), skeleton=skeleton, frame_time=frame_time, values=values)
