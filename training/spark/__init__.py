"""The Spark engine (`python -m training train --engine spark`): the events read,
validated and indexed on Spark, and every fit of the pipeline's ALS stage done by MLlib's
implicit-feedback ALS; the arrays come back to the shared code, which writes the same
bundle and report (docs/training.md "Training on Spark"). Only training imports this
package, and only when the engine is asked for: serving never needs Java or pyspark."""
