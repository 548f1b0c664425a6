"""Raw-format adapters. Each module exposes ``read(raw: Path, **options) -> Iterator[Sample]``."""
