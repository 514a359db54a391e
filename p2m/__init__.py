"""p2m: datasets, shards and a resumable Pose2Mesh trainer on an open body model."""

__version__ = "0.1.0"
