"""KServe's REST client (``kserve.InferenceRESTClient``, protocol v2) against a server, run by the
Python of KServe's own virtual environment (``.bench/kserve``: kserve pins what cutover's
environment cannot hold beside its own). Not a test module: tests/serving/test_clients.py runs it
as ``python kserve_client.py BASE_URL MODEL REQUESTS_JSON [HEADERS_JSON]`` and reads one JSON line: for each
request (a v2 request body, sent as a dict), the response's ``id`` and outputs, or the text of
the ``httpx.HTTPStatusError`` the client raised, which is where KServe puts the server's reason."""

import asyncio
import json
import sys

import httpx
from kserve import InferenceRESTClient, RESTConfig


async def main(base_url: str, model: str, requests: list, headers: dict) -> list:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    answers = []
    for request in requests:
        try:
            response = await client.infer(base_url, request, model_name=model, headers=headers)
        except httpx.HTTPStatusError as error:
            answers.append({"status": error.response.status_code, "error": str(error)})
            continue
        outputs = {output.name: output.as_numpy().tolist() for output in response.outputs}
        answers.append({"status": 200, "id": response.id, "outputs": outputs})
    return answers


if __name__ == "__main__":
    headers = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), headers))))
