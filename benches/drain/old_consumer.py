#!/usr/bin/env python3
"""What the old SpherosegV4 ML service's RabbitMQ consumer did, minus the model.

One process: prefetch 4 (RABBITMQ_PREFETCH_COUNT), one task at a time, ack after the work.
Instead of running the ResUNet it sleeps for the task's synthetic duration
(`parameters.synthetic_ms`). It records each task by appending `<taskId> <start> <finish>` lines (unix seconds) to
--done, so that the driver can compute the makespan (last finish - first start).

    python old_consumer.py --url amqp://guest:guest@127.0.0.1:5672/%2f --queue q --done done.txt
"""
import argparse
import json
import os
import time

import pika


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
    ap.add_argument("--queue", default=os.environ.get("RABBITMQ_QUEUE", "segmentation_tasks"))
    ap.add_argument("--prefetch", type=int, default=int(os.environ.get("RABBITMQ_PREFETCH_COUNT", "4")))
    ap.add_argument("--done", required=True, help="file to append '<taskId> <start> <finish>' lines to")
    args = ap.parse_args()

    conn = pika.BlockingConnection(pika.URLParameters(args.url))
    ch = conn.channel()
    # Declared as the backend declares it: durable, no arguments.
    ch.queue_declare(queue=args.queue, durable=True)
    ch.basic_qos(prefetch_count=args.prefetch)
    done = open(args.done, "a", buffering=1)

    def on_message(channel, method, _props, body):
        try:
            msg = json.loads(body)
        except ValueError:
            # The old service: nack without requeue (the message vanished).
            channel.basic_nack(delivery_tag=method.delivery_tag, requeue=False)
            return
        ms = (msg.get("parameters") or {}).get("synthetic_ms", 100)
        start = time.time()
        time.sleep(ms / 1000.0)  # "inference", one task at a time
        done.write(f"{msg.get('taskId')} {start:.6f} {time.time():.6f}\n")
        channel.basic_ack(delivery_tag=method.delivery_tag)

    ch.basic_consume(queue=args.queue, on_message_callback=on_message)
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass


if __name__ == "__main__":
    main()
