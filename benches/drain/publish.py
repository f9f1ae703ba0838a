#!/usr/bin/env python3
"""Publishes the drain benchmark's batch like the backend does (default exchange,
persistent, durable queue with no arguments): N tasks, most SHORT ms, LONG_COUNT of LONG ms,
shuffled with a fixed seed. The synthetic duration is in `parameters.synthetic_ms` (read by
old_consumer.py) and in the image path, `bench/<ms>.png` (an image <ms> pixels wide: the
spheromesh side's test-double runner sleeps the width, since a SegmentTask carries no
parameters)."""
import argparse
import json
import random
import time
import uuid

import pika


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--queue", required=True)
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--long-count", type=int, default=10)
    ap.add_argument("--short-ms", type=int, default=100)
    ap.add_argument("--long-ms", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--callback-base", default="http://127.0.0.1:9/api/images")
    args = ap.parse_args()

    durations = [args.long_ms] * args.long_count + [args.short_ms] * (args.count - args.long_count)
    random.Random(args.seed).shuffle(durations)
    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    ch = conn.channel()
    ch.queue_declare(queue=args.queue, durable=True)
    ch.queue_purge(queue=args.queue)
    for i, ms in enumerate(durations):
        image = str(uuid.UUID(int=random.Random(args.seed * 1000 + i).getrandbits(128)))
        body = {
            "taskId": f"bench-{i}",
            "imageId": image,
            "imagePath": f"bench/{ms}.png",
            "parameters": {"synthetic_ms": ms},
            "retries": 0,
            "callbackUrl": f"{args.callback_base}/{image}/segmentation",
        }
        ch.basic_publish(exchange="", routing_key=args.queue, body=json.dumps(body),
                         properties=pika.BasicProperties(delivery_mode=2))
    conn.close()


if __name__ == "__main__":
    main()
