"""Score a sums submission: python evaluate.py --gen-dir DIR → DIR/results.json."""

import argparse
import json
from pathlib import Path

TRUTH = Path(__file__).resolve().parent.parent / "private" / "answers.json"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen-dir", type=Path, required=True)
    args = parser.parse_args()
    truth = {row["id"]: row["answer"] for row in json.loads(TRUTH.read_text())}
    submitted = json.loads((args.gen_dir / "submission.json").read_text())["answers"]
    details = [
        {"id": qid, "answer": submitted.get(qid), "is_correct": submitted.get(qid) == answer}
        for qid, answer in truth.items()
    ]
    correct = sum(d["is_correct"] for d in details)
    results = {"accuracy": correct / len(details), "correct": correct, "details": details}
    (args.gen_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
