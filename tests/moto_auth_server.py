"""moto's standalone server, for the ``s3_service`` and ``s3_auth_service`` test services (each in a
process of its own): ``python tests/moto_auth_server.py -p PORT``.

With request authentication on, moto recomputes each request's SigV4 signature from the path
and query string it has already decoded, so a list with ``Prefix=a/b`` (which boto3, like AWS,
signs as ``Prefix=a%2Fb``) or a key with a space is refused with SignatureDoesNotMatch although
AWS accepts it. This wrapper re-encodes path and query the way SigV4 canonicalises them for S3
before moto compares signatures; nothing else changes, and a request signed with a wrong key
still fails.
"""

import sys
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from moto.iam import access_control

_create_aws_request = access_control.IAMRequestBase._create_aws_request


def _canonical_query(self):  # type: ignore[no-untyped-def]
    request = _create_aws_request(self)
    parts = urlsplit(request.url)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True), quote_via=quote, safe="-_.~")
    request.url = urlunsplit(parts._replace(path=quote(unquote(parts.path), safe="/~"), query=query))
    return request


access_control.IAMRequestBase._create_aws_request = _canonical_query

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
