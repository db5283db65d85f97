"""rosbag2 drives (``rosbags``): write frames as Image + CameraInfo + ground truth, replay them.

A drive bag holds three topics with equal header stamps per frame: the camera image (``rgb8``),
its ``CameraInfo`` and the ground-truth label map (``mono8``, class ids of the bag's class table,
recorded as JSON in the bag's custom data under ``metafusion.table``). Bags are written under a
hidden temporary name and renamed when complete, so a valid name never holds half a bag.
Playback publishes the stored CDR bytes unchanged through rclpy with the bag's timing, so a real
ROS install can equally use ``ros2 bag play`` on the same bag.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import json
from pathlib import Path
import re
import shutil
import struct
import time
from typing import Any, Callable, Iterable, Iterator

from lz4.frame import LZ4FrameDecompressor
import numpy as np
from rosbags.rosbag2 import Reader, storage_mcap, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import get_typestore, Stores

from metafusion_ros.core.classes import ClassTable
from metafusion_ros.core.files import FileProblem, parse_json, read_text

__all__ = ['IMAGE_TOPIC', 'INFO_TOPIC', 'GT_TOPIC', 'BagError', 'write_drive', 'DriveBag',
           'replay', 'publishers', 'clock_publisher', 'wait_for_subscribers', 'header_stamp',
           'message_class', 'deserialize', 'cdr_problem', 'KNOWN_TYPES', 'unknown_topics']

IMAGE_TOPIC = '/camera/image_raw'
INFO_TOPIC = '/camera/camera_info'
GT_TOPIC = '/camera/ground_truth'
TABLE_KEY = 'metafusion.table'
# Header stamps of written drives start here (deterministic bags).
START_NS = 1_700_000_000 * 10**9
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
TYPESTORE = get_typestore(Stores.ROS2_KILTED)
# The message type of each topic of a drive bag.
DRIVE_TYPES = {IMAGE_TOPIC: 'sensor_msgs/msg/Image', INFO_TOPIC: 'sensor_msgs/msg/CameraInfo',
               GT_TOPIC: 'sensor_msgs/msg/Image'}
# The only message types the bag tools publish; a bag's type names are never imported.
KNOWN_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CameraInfo',
               'sensor_msgs/msg/CompressedImage')


# The most one MCAP chunk may declare uncompressed (rosbag2 writes chunks of about 1 MiB; a chunk
# holding one 8K rgb8 frame has 100 MB).
MAX_CHUNK_BYTES = 512 << 20


class BagError(ValueError):
    """A bag that cannot be written, read or scored as asked; the message names it."""


def _bounded(compression: str) -> Callable[[bytes, int], bytes]:
    """Return a decompressor of MCAP chunks that never inflates past the declared size.

    rosbags decompresses a chunk whole and compares the result with the size the chunk
    declares afterwards: a 1 MB chunk declaring 1 MB could inflate to gigabytes first.
    """
    def decompress(data: bytes, size: int) -> bytes:
        if size > MAX_CHUNK_BYTES:
            raise ReaderError(f'a chunk declares {size} bytes uncompressed, more than the '
                              f'{MAX_CHUNK_BYTES >> 20} MiB the tools read')
        if not compression:
            return data
        decompressor = storage_mcap.zstd.ZstdDecompressor() if compression == 'zstd' else \
            LZ4FrameDecompressor()
        return decompressor.decompress(data, max_length=size + 1)  # one more: rosbags says so
    return decompress


# Every chunk of an MCAP bag the tools read is decompressed through these.
storage_mcap.DECOMPRESSORS.update({kind: _bounded(kind) for kind in ('', 'lz4', 'zstd')})


def _header(stamp_ns: int, frame_id: str) -> Any:
    """Return a rosbags ``std_msgs/Header``."""
    types = TYPESTORE.types
    stamp = types['builtin_interfaces/msg/Time'](sec=stamp_ns // 10**9,
                                                 nanosec=stamp_ns % 10**9)
    return types['std_msgs/msg/Header'](stamp=stamp, frame_id=frame_id)


def _image(pixels: np.ndarray, encoding: str, header: Any) -> Any:
    """Return a rosbags ``sensor_msgs/Image`` of contiguous 8-bit ``pixels``."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return TYPESTORE.types['sensor_msgs/msg/Image'](
        header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
        step=width * channels, data=np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1))


def _camera_info(height: int, width: int, header: Any) -> Any:
    """Return a pinhole ``CameraInfo`` (focal length = width, centred principal point)."""
    types = TYPESTORE.types
    f, cx, cy = float(width), width / 2.0, height / 2.0
    return types['sensor_msgs/msg/CameraInfo'](
        header=header, height=height, width=width, distortion_model='plumb_bob',
        d=np.zeros(5), k=np.array([f, 0, cx, 0, f, cy, 0, 0, 1.0]),
        r=np.eye(3).reshape(-1), p=np.array([f, 0, cx, 0, 0, f, cy, 0, 0, 0, 1.0, 0]),
        binning_x=0, binning_y=0,
        roi=types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0,
                                                      width=0, do_rectify=False))


def write_drive(frames: Iterable[Any], out: str | Path, table: ClassTable,
                storage: str = 'mcap', rate: float = 10.0, frame_id: str = 'camera',
                progress: Callable[[Iterable[Any]], Iterable[Any]] = iter,
                replace: bool = False) -> int:
    """Write ``frames`` (with ``image`` and ``labels``) as a drive bag; return the frame count.

    The bag is written to a hidden sibling folder and renamed to ``out`` only when complete.
    An existing bag at ``out`` is replaced then only with ``replace``; anything else that
    exists there, never.
    """
    out = Path(out)
    if storage not in STORAGES:
        raise BagError(f'unknown storage {storage!r}; use one of {", ".join(STORAGES)}')
    if not rate > 0:
        raise BagError(f'rate must be positive, got {rate}')
    if out.exists() and not (replace and (out / 'metadata.yaml').is_file()):
        raise BagError(f'bag {out} already exists' + (
            ' and is not a bag; it is not replaced' if replace else
            '; remove it, choose another name or replace it (bag make --force)'))
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f'.{out.name}.partial')
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    partial = scratch / out.name
    count = 0
    try:
        with Writer(partial, version=9, storage_plugin=STORAGES[storage]) as writer:
            writer.set_custom_data(TABLE_KEY, json.dumps(table.to_dict()))
            conns = {topic: writer.add_connection(topic, kind, typestore=TYPESTORE) for topic, kind
                     in ((IMAGE_TOPIC, 'sensor_msgs/msg/Image'),
                         (INFO_TOPIC, 'sensor_msgs/msg/CameraInfo'))}
            for frame in progress(frames):
                stamp = START_NS + round(count * 1e9 / rate)
                header = _header(stamp, frame_id)
                height, width = frame.image.shape[:2]
                messages = {IMAGE_TOPIC: _image(frame.image, 'rgb8', header),
                            INFO_TOPIC: _camera_info(height, width, header)}
                if frame.labels is not None:
                    messages[GT_TOPIC] = _image(frame.labels, 'mono8', header)
                    if GT_TOPIC not in conns:
                        conns[GT_TOPIC] = writer.add_connection(
                            GT_TOPIC, 'sensor_msgs/msg/Image', typestore=TYPESTORE)
                for topic, msg in messages.items():
                    writer.write(conns[topic], stamp,
                                 TYPESTORE.serialize_cdr(msg, msg.__msgtype__))
                count += 1
        if count == 0:
            raise BagError(f'bag {out}: no frames to write')
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return count


@dataclass(frozen=True)
class DriveBag:
    """A drive bag opened for reading (its topics, class table and ground truth)."""

    path: Path

    def _check_metadata(self) -> None:
        """Refuse metadata above the text cap and rosbag2's file / message compression.

        rosbags inflates a ``file``-compressed bag to a temporary folder and ``message``
        compression message by message, neither bounded; MCAP chunk compression is.
        """
        metadata = self.path / 'metadata.yaml'
        if not metadata.is_file():
            return  # the reader names it
        try:
            text = read_text(metadata, 'bag metadata')
        except (FileProblem, OSError) as exc:
            raise BagError(f'bag {self.path}: unreadable ({exc})') from exc
        mode = re.search(r'^\s*compression_mode:\s*[\'"]?(\w*)', text, re.MULTILINE)
        if mode and mode.group(1).lower() in ('file', 'message'):
            raise BagError(f'bag {self.path}: rosbag2 {mode.group(1).lower()} compression is '
                           f'not read (its size cannot be bounded before it is inflated); '
                           f'convert it to MCAP with `ros2 bag convert` (chunk compression is '
                           f'fine)')

    def _reader(self) -> Reader:
        """Return an opened reader; raise BagError naming the bag when it is unreadable."""
        if not self.path.exists():
            raise BagError(f'bag {self.path} does not exist')
        self._check_metadata()
        try:
            reader = Reader(self.path)
            reader.open()
        except Exception as exc:  # noqa: B902 - rosbags, mcap and sqlite3 raise assorted errors
            raise BagError(f'bag {self.path}: unreadable ({type(exc).__name__}: {exc})') from exc
        return reader

    def topics(self) -> dict[str, str]:
        """Return ``{topic: message type}``."""
        reader = self._reader()
        try:
            return {c.topic: c.msgtype for c in reader.connections}
        finally:
            reader.close()

    def counts(self) -> Counter[str]:
        """Return the number of messages per topic (from the bag's metadata)."""
        reader = self._reader()
        try:
            counts: Counter[str] = Counter()
            for conn in reader.connections:
                counts[conn.topic] += conn.msgcount
            return counts
        finally:
            reader.close()

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[int, str, bytes]]:
        """Yield ``(bag time ns, topic, CDR bytes)`` in time order."""
        reader = self._reader()
        try:
            wanted = [c for c in reader.connections if topics is None or c.topic in topics]
            for conn, stamp, data in reader.messages(connections=wanted):
                yield stamp, conn.topic, bytes(data)
        except Exception as exc:  # noqa: B902 - rosbags, mcap and sqlite3 raise assorted errors
            raise BagError(f'bag {self.path}: unreadable ({type(exc).__name__}: {exc})') from exc
        finally:
            reader.close()

    def table(self) -> ClassTable:
        """Return the class table recorded in the bag."""
        reader = self._reader()
        try:
            custom = reader.storage.metadata.custom or {}
        finally:
            reader.close()
        if TABLE_KEY not in custom:
            raise BagError(f'bag {self.path}: no class table recorded ({TABLE_KEY}); '
                           f'write it with `metafusion bag make`')
        try:
            return ClassTable.from_dict(parse_json(custom[TABLE_KEY], f'{TABLE_KEY} of the bag'))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BagError(f'bag {self.path}: unreadable class table ({TABLE_KEY}): '
                           f'{exc}') from exc

    def ground_truth(self) -> dict[tuple[int, int], np.ndarray]:
        """Return the label maps by header stamp ``(sec, nanosec)``; a bag without is an error."""
        kinds = self.topics()
        if kinds.get(GT_TOPIC) != 'sensor_msgs/msg/Image':
            raise BagError(f'bag {self.path} has no ground truth on {GT_TOPIC} (topics: '
                           f'{", ".join(sorted(kinds)) or "none"}); scoring needs it')
        truth = {}
        for _, _, data in self.messages([GT_TOPIC]):
            try:
                msg = TYPESTORE.deserialize_cdr(data, 'sensor_msgs/msg/Image')
            except Exception as exc:  # noqa: B902 - rosbags raises assorted errors on bad CDR
                raise BagError(f'bag {self.path}: corrupt ground truth message ({exc})') from exc
            if msg.encoding != 'mono8' or msg.step < msg.width or \
                    len(msg.data) != msg.height * msg.step:
                raise BagError(f'bag {self.path}: ground truth must be mono8 with '
                               f'height*step bytes, got {msg.encoding}')
            labels = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
            truth[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = \
                labels[:, :msg.width].copy()
        if not truth:
            raise BagError(f'bag {self.path} has no messages on {GT_TOPIC}; scoring needs them')
        return truth


def message_class(msgtype: str) -> type:
    """Return the rclpy message class of one of :data:`KNOWN_TYPES` (BagError otherwise)."""
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    classes = dict(zip(KNOWN_TYPES, (Image, CameraInfo, CompressedImage)))
    if msgtype not in classes:
        raise BagError(f'message type {msgtype} is not one the bag tools read '
                       f'({", ".join(KNOWN_TYPES)})')
    return classes[msgtype]


def unknown_topics(bag: DriveBag, topics: Iterable[str] | None = None) -> Counter[str]:
    """Return ``'<topic>: unknown type <type>'`` -> message count for topics not published."""
    kinds, counts = bag.topics(), bag.counts()
    return Counter({f'{t}: unknown type {k}': counts[t] for t, k in kinds.items()
                    if k not in KNOWN_TYPES and (topics is None or t in topics)})


def publishers(node: Any, bag: DriveBag, topics: Iterable[str] | None = None,
               remap: dict[str, str] | None = None) -> dict[str, Any]:
    """Return an rclpy publisher per bag topic (``topics`` filters, ``remap`` renames).

    Topics of types other than :data:`KNOWN_TYPES` get none (:func:`unknown_topics` counts them).
    """
    remap = remap or {}
    kinds = bag.topics()
    unknown = [t for t in (topics or ()) if t not in kinds]
    if unknown:
        raise BagError(f'bag {bag.path} has no topic {", ".join(unknown)} '
                       f'(topics: {", ".join(sorted(kinds))})')
    for topic, kind in DRIVE_TYPES.items():
        if kinds.get(topic, kind) != kind:
            raise BagError(f'bag {bag.path}: {topic} holds {kinds[topic]} messages; a drive bag '
                           f'has {kind} there')
    return {t: node.create_publisher(message_class(kinds[t]), remap.get(t, t), 10)
            for t in kinds if (topics is None or t in topics) and kinds[t] in KNOWN_TYPES}


def clock_publisher(node: Any) -> Callable[[int], None]:
    """Return a function publishing a time in ns as ``rosgraph_msgs/Clock`` on ``/clock``."""
    from rosgraph_msgs.msg import Clock

    pub = node.create_publisher(Clock, '/clock', 10)

    def publish(ns: int) -> None:
        """Publish ``ns`` nanoseconds as the current (simulated) time."""
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(ns, 10**9)
        pub.publish(msg)
    return publish


def wait_for_subscribers(executor: Any, node: Any, topics: Iterable[str],
                         timeout: float) -> list[str]:
    """Spin until each of ``node``'s publishers on ``topics`` has matched a subscriber.

    DDS discovery takes a moment; what is published before it completes is lost (volatile
    durability). Return the topics still without a subscriber after ``timeout`` seconds.
    """
    topics = set(topics)
    deadline = time.monotonic() + timeout

    def unmatched() -> list[str]:
        return sorted(p.topic_name for p in node.publishers
                      if p.topic_name in topics and p.get_subscription_count() == 0)
    while unmatched() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return unmatched()


def header_stamp(data: bytes) -> tuple[int, int]:
    """Return ``(sec, nanosec)`` of a CDR message that starts with a std_msgs/Header."""
    if len(data) < 12 or data[1] not in (0, 1):
        raise BagError('message too short or not CDR encapsulated')
    return struct.unpack_from('<iI' if data[1] == 1 else '>iI', data, 4)


def deserialize(data: bytes, msgtype: str) -> Any:
    """Return the ``pkg/msg/Name`` message in CDR ``data`` (rosbags), or None if it is corrupt."""
    try:
        return TYPESTORE.deserialize_cdr(data, msgtype)
    except Exception:  # noqa: B902 - rosbags raises assorted errors on bad CDR
        return None


def cdr_problem(data: bytes, msgtype: str) -> str:
    """Return ``'corrupt_cdr'`` when ``data`` is not a valid ``msgtype`` message, else ''."""
    return 'corrupt_cdr' if deserialize(data, msgtype) is None else ''


def replay(executor: Any, bag: DriveBag, pubs: dict[str, Any], rate: float = 1.0,
           loop: bool = False, after_publish: Callable[[str, bytes], None] | None = None,
           should_stop: Callable[[], bool] = lambda: False,
           check: Callable[[str, bytes], str] | None = None,
           skipped: Counter[str] | None = None,
           clock: Callable[[int], None] | None = None) -> int:
    """Publish the bag's messages with its timing scaled by ``1 / rate``; return the count.

    The executor is spun while waiting, so the caller's subscriptions keep receiving.
    ``clock(ns)`` (see :func:`clock_publisher`) gets the bag time: at each message its
    recorded time, and while waiting for the next one the time played so far (every 50 ms).
    ``after_publish(topic, data)`` runs after each message (score uses it for lock-step).
    A message for which ``check(topic, data)`` returns a reason (default: its CDR does not
    deserialize as the topic's type) is not published but counted in ``skipped`` under
    ``'<topic>: <reason>'``.
    """
    if check is None:
        kinds = bag.topics()

        def check(topic: str, data: bytes) -> str:
            """Return why ``data`` is not a valid message of ``topic``'s type, or ''."""
            return cdr_problem(data, kinds[topic])
    if not rate > 0:
        raise BagError(f'rate must be positive, got {rate}')
    count = 0
    while True:
        first = start = None
        for stamp, topic, data in bag.messages(list(pubs)):
            if should_stop():
                return count
            if first is None:
                first, start = stamp, time.monotonic()
            target = start + (stamp - first) / 1e9 / rate
            while time.monotonic() < target and not should_stop():
                if clock is not None:
                    clock(first + round((time.monotonic() - start) * rate * 1e9))
                executor.spin_once(timeout_sec=min(0.05, max(0.0, target - time.monotonic())))
            if clock is not None:
                clock(stamp)
            problem = check(topic, data)
            if problem:
                if skipped is not None:
                    skipped[f'{topic}: {problem}'] += 1
                continue
            pubs[topic].publish(data)
            count += 1
            if after_publish is not None:
                after_publish(topic, data)
        if not loop or first is None:
            return count


def play(bag: DriveBag, topics: list[str], rate: float = 1.0, loop: bool = False,
         clock: bool = False, wait: float = 3.0, skipped: Counter[str] | None = None,
         unheard: Callable[[list[str]], None] = lambda topics: None) -> int:
    """Replay ``topics`` of ``bag`` from a node of its own until the end (or Ctrl-C).

    Waits up to ``wait`` s for subscribers first and passes the topics nobody subscribed to in
    time to ``unheard``; ``clock`` publishes the bag time on /clock. Return the count of
    published messages, also when Ctrl-C ends the play (``--loop`` runs until then).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    from metafusion_ros.ros.dds import use_large_frames_profile

    use_large_frames_profile()  # large frames reach subscribers only if the publisher uses it
    rclpy.init()
    node = rclpy.create_node('metafusion_bag_play')
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    published: list[str] = []  # counted as they go out: Ctrl-C interrupts replay()
    try:
        pubs = publishers(node, bag, topics)
        publish_clock = clock_publisher(node) if clock else None
        alone = wait_for_subscribers(executor, node, [*pubs, '/clock'], wait) if wait > 0 else []
        if alone:
            unheard(alone)
        replay(executor, bag, pubs, rate=rate, loop=loop, should_stop=lambda: not rclpy.ok(),
               after_publish=lambda topic, data: published.append(topic), skipped=skipped,
               clock=publish_clock)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return len(published)


def image_rgb(data: bytes) -> np.ndarray:
    """Return a bag's CDR ``sensor_msgs/Image`` as RGB uint8 (H, W, 3)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from metafusion_ros.ros.conversions import image_to_rgb

    return image_to_rgb(deserialize_message(data, Image))
