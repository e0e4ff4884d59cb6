#!/usr/bin/python3
"""What botocore resolves in this environment: "METHOD LAST4" (or "none").

Run with Debian's /usr/bin/python3 (python3-botocore).  Debian 12's botocore
(1.29) predates AWS_ENDPOINT_URL_<SERVICE>; to point its STS client at the
test's mock as newer botocore does from AWS_ENDPOINT_URL_STS, the client
creator is given that endpoint here.  Nothing else is changed.
"""
import os
import sys

import botocore.session

session = botocore.session.Session()
sts_url = os.environ.get("AWS_ENDPOINT_URL_STS")
if sts_url:
    original = session.create_client

    def create_client(service_name, *args, **kwargs):
        if service_name == "sts" and not kwargs.get("endpoint_url"):
            kwargs["endpoint_url"] = sts_url
        return original(service_name, *args, **kwargs)

    session.create_client = create_client

try:
    creds = session.get_credentials()
except Exception as e:  # a configured source that fails
    print("error %s" % type(e).__name__)
    sys.exit(0)
if creds is None:
    print("none")
else:
    frozen = creds.get_frozen_credentials()
    print("%s %s" % (creds.method, frozen.access_key[-4:]))
