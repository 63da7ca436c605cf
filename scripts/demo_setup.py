"""Demo setup for scripts/demo.sh: creates a bucket and a queue in moto, wires the bucket's
ObjectCreated notifications to the queue, uploads a small gzip sample, and prints the queue
URL. Uses boto3 against the endpoint given as the only argument."""

import gzip
import json
import socket
import sys
import time
from urllib.parse import urlparse

import boto3

endpoint = sys.argv[1]
# moto was just started: wait until it accepts connections.
url = urlparse(endpoint)
deadline = time.time() + 30
while True:
    try:
        socket.create_connection((url.hostname, url.port), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit(f"moto did not start at {endpoint}")
        time.sleep(0.2)
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
s3 = boto3.client("s3", **kw)
sqs = boto3.client("sqs", **kw)
s3.create_bucket(Bucket="demo-logs")
queue_url = sqs.create_queue(QueueName="demo-logs")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
s3.put_bucket_notification_configuration(
    Bucket="demo-logs",
    NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
)
lines = [json.dumps({"eventTime": f"2026-11-29T10:00:0{i}Z", "eventName": "GetObject", "n": i},
                    separators=(",", ":")) for i in range(5)]
s3.put_object(Bucket="demo-logs", Key="AWSLogs/demo/sample.log.gz",
              Body=gzip.compress(("\n".join(lines) + "\n").encode()))
print(queue_url)
