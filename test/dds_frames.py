"""Helper process (no tests) for the large-frame delivery test: publish or count camera frames.

``python dds_frames.py pub TOPIC WIDTH HEIGHT COUNT HZ``: waits for a subscriber, then publishes
COUNT bgr8 frames with SensorDataQoS (best effort) at HZ. ``python dds_frames.py sub TOPIC
SECONDS``: counts distinct frame stamps with SensorDataQoS until SECONDS have passed or 3 s went
by without a frame after the first; prints the count as JSON.
"""
import json
import sys
import time

import numpy as np
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def publish(node, topic: str, width: int, height: int, count: int, hz: float) -> None:
    """Publish ``count`` frames at ``hz`` once a subscriber is matched."""
    pub = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 60.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let the subscriber's side of discovery settle as well
    msg = Image(height=height, width=width, encoding='bgr8', step=width * 3,
                data=np.random.default_rng(0).integers(0, 256, height * width * 3,
                                                       dtype=np.uint8).tobytes())
    msg.header.frame_id = 'camera'
    start = time.monotonic()
    for i in range(count):
        msg.header.stamp.sec = i + 1
        pub.publish(msg)
        time.sleep(max(0.0, start + (i + 1) / hz - time.monotonic()))
    time.sleep(1.0)


def count_frames(node, topic: str, seconds: float) -> int:
    """Return the number of distinct stamps received on ``topic``."""
    stamps, last = set(), [0.0]

    def received(msg: Image) -> None:
        stamps.add(msg.header.stamp.sec)
        last[0] = time.monotonic()

    node.create_subscription(Image, topic, received, qos_profile_sensor_data)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stamps and time.monotonic() - last[0] > 3.0):
        rclpy.spin_once(node, timeout_sec=0.05)
    return len(stamps)


def main(argv: list[str]) -> int:
    """Run the publisher or the counter."""
    rclpy.init()
    node = rclpy.create_node(f'dds_frames_{argv[1]}')
    try:
        if argv[1] == 'pub':
            publish(node, argv[2], int(argv[3]), int(argv[4]), int(argv[5]), float(argv[6]))
        else:
            print(json.dumps({'received': count_frames(node, argv[2], float(argv[3]))}))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
