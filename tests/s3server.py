"""moto's S3 server on a loopback port, with the few helpers the S3 tests need."""

from __future__ import annotations

import logging

from tests.conftest import free_port


class S3Server:
    def __init__(self) -> None:
        import boto3
        from moto import server as moto_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_port()
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port,
                                                     verbose=False)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                                   aws_access_key_id="test", aws_secret_access_key="test")

    def stop(self) -> None:
        self.server.stop()

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(i["Key"] for p in pages for i in p.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def objects(self, bucket: str) -> dict[str, bytes]:
        return {k: self.get(bucket, k) for k in self.keys(bucket)}

    def uploads(self, bucket: str) -> list:
        return self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
