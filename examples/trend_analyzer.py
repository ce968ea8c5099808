"""A TrendAnalyzer actor counting hashtags in 10,000 posts sent by several producer tasks.

Producer tasks generate posts (seeded, so every run sees the same posts) and send them in
batches to one actor through its handle; the actor keeps the hashtag counts, which only it
touches, so no locks are needed. The driver then asks it for the top trends.

    python examples/trend_analyzer.py                       # 10,000 posts from 4 producers
    python examples/trend_analyzer.py --posts 2000 --producers 2 --top 3

Expected output (defaults):
    4 producers sent 10000 posts in ... s; the analyzer received 10000
    top 5 trends:
      #python  4287
      #ai  3354
      #data  2403
      #rust  2013
      #climate  1583
"""
from __future__ import annotations

import argparse
import random
import re
import time
from collections import Counter

import tasuki

HASHTAGS = ["#python", "#ai", "#data", "#rust", "#climate", "#music", "#football", "#coffee", "#travel", "#books"]
POPULARITY = [30, 22, 15, 12, 10, 8, 7, 5, 4, 3]
WORDS = ["loving", "the", "new", "release", "today", "thoughts", "on", "this", "weekend", "again"]


@tasuki.remote
class TrendAnalyzer:
    """Counts hashtags across every post it is sent."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.posts = 0

    def add_posts(self, posts: list[str]) -> int:
        for post in posts:
            self.counts.update(tag.lower() for tag in re.findall(r"#\w+", post))
        self.posts += len(posts)
        return self.posts

    def top(self, k: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:k]

    def total_posts(self) -> int:
        return self.posts


def make_post(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(3, 8))
    tags = set(rng.choices(HASHTAGS, weights=POPULARITY, k=rng.randint(1, 3)))
    return " ".join(words + sorted(tags))


@tasuki.remote
def produce(analyzer, producer: int, count: int, batch: int = 250) -> int:
    """Generate `count` posts and send them to the analyzer in batches; returns how many were sent."""
    rng = random.Random(producer)
    posts = [make_post(rng) for _ in range(count)]
    tasuki.get([analyzer.add_posts.remote(posts[i:i + batch]) for i in range(0, count, batch)])
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=10_000)
    parser.add_argument("--producers", type=int, default=4, help="producer tasks")
    parser.add_argument("--top", type=int, default=5, help="how many trends to print")
    parser.add_argument("--address", default=None, help="a running cluster (HOST:PORT or auto)")
    args = parser.parse_args()

    tasuki.init(address=args.address)
    analyzer = TrendAnalyzer.remote()
    per_producer, extra = divmod(args.posts, args.producers)
    shares = [per_producer + (p < extra) for p in range(args.producers)]
    started = time.time()
    sent = sum(tasuki.get([produce.remote(analyzer, p, n) for p, n in enumerate(shares)]))
    elapsed = time.time() - started
    received = tasuki.get(analyzer.total_posts.remote())
    print(f"{args.producers} producers sent {sent} posts in {elapsed:.2f} s; the analyzer received {received}")
    print(f"top {args.top} trends:")
    for tag, count in tasuki.get(analyzer.top.remote(args.top)):
        print(f"  {tag}  {count}")
    tasuki.shutdown()


if __name__ == "__main__":
    main()
