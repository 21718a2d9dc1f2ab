"""flowrec: a real-time recommender for online shops on Apache Flink."""

__version__ = "0.1.0"
