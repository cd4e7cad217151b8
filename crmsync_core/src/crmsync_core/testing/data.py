"""Realistic contact rows for the demo, the tests and the benchmarks."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

_FIRST = [
    "Anna",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Émilie",
    "Fatima",
    "Giulia",
    "Hiroshi",
    "Ingrid",
    "José",
    "Kwame",
    "Léa",
    "Mateusz",
    "Nguyễn",
    "Olga",
    "Priya",
    "Quentin",
    "Rūta",
    "Søren",
    "Tomás",
    "Ülkü",
    "Václav",
    "Wei",
    "Xóchitl",
    "Yusuf",
    "Zoë",
    "李",
    "Мария",
    "محمد",
    "Ωmega",
]
_LAST = [
    "Müller",
    "García",
    "O'Brien",
    "van der Berg",
    "Kowalski",
    "Nakamura",
    "Dubois",
    "Rossi",
    "Ødegaard",
    "Smith-Jones",
    "Çelik",
    "Nowak",
    "Андреев",
    "明",
    "Lefèvre",
    "da Silva",
]
_DOMAINS = ["acme.io", "example.com", "globex.net", "initech.org", "umbrella.co", "gmail.com"]
_TYPES = ["SERVICE", "CORPORATE", "FREE", "UNKNOWN"]


def contact_rows(
    count: int,
    *,
    seed: int = 0,
    missing_email_share: float = 0.0,
    invalid_email_share: float = 0.0,
    duplicate_email_share: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """Rows for a contacts table: unicode names, phones with and without country codes, and the
    requested shares of missing, invalid and duplicate e-mail addresses."""
    rng = random.Random(seed)
    domain_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(20)]
    emails: list[str] = []
    for n in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        domain = rng.choice(_DOMAINS)
        roll = rng.random()
        email: str
        if roll < missing_email_share:
            email = ""
        elif roll < missing_email_share + invalid_email_share:
            email = rng.choice(
                ["not-an-email", f"{n}@", f"user{n}@@{domain}", f"user {n}@{domain}"]
            )
        elif emails and roll < missing_email_share + invalid_email_share + duplicate_email_share:
            email = rng.choice(emails).upper()
        else:
            email = f"{_ascii(first)}.{_ascii(last)}.{n}@{domain}".lower()
            emails.append(email)
        phone = rng.choice(
            [
                f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} 12",
                "0612345678",
                f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                None,
                "call me",
            ]
        )
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "email": email,
            "name": rng.choice([f"{first} {last}", first, None]),
            "phone_number": phone,
            "email_type": rng.choice(_TYPES),
            "has_gmail": domain == "gmail.com",
            "source_url": f"https://{domain}/contact",
            "domain_id": rng.choice(domain_ids),
            "page_id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "context": None,
        }


def _ascii(text: str) -> str:
    cleaned = "".join(ch for ch in text.lower() if ch.isascii() and ch.isalnum())
    return cleaned or "x"
