"""Reference agent for the sums task: asks a remote model each question, writes a submission.

Run: python reference_target_agent.py --dataset_dir D --working_dir W (SUMS_API_KEY set).
"""

import argparse
import json
import os
import re
from pathlib import Path

from openai import OpenAI

BASE_URL = "https://api.example.invalid/v1"
MODEL = "remote/big-model"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--working_dir", type=Path, required=True)
    args = parser.parse_args()
    api_key = os.environ.get("SUMS_API_KEY")
    if not api_key:
        raise SystemExit("Set SUMS_API_KEY")
    client = OpenAI(api_key=api_key, base_url=BASE_URL)
    answers = {}
    for row in json.loads((args.dataset_dir / "questions.json").read_text()):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": row["question"]}],
            max_tokens=8,
            temperature=0.0,
        )
        found = re.findall(r"-?[0-9]+", reply.choices[0].message.content or "")
        answers[row["id"]] = found[-1] if found else ""
    args.working_dir.mkdir(parents=True, exist_ok=True)
    (args.working_dir / "submission.json").write_text(json.dumps({"answers": answers}))


if __name__ == "__main__":
    main()
