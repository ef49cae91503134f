"""Attacks on a running server: each test tries to break one promise the README makes, the way an
adversary or an unlucky user would, and asserts that it is refused."""
