"""Scale-out: the registered demo model runs in Spark through ``mlflow.pyfunc.spark_udf`` on the cohort's feature
table and gives the scores of the local batch path (``omics-risk score``) to 1e-6.

Runs in a local Spark session (``local[2]``, 512 MB driver); skipped when pyspark or Java is missing.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest

from omics_risk.workflows.scoring import load_batch_model, score_cohort, spark_result_type, write_feature_table

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'omics-risk[spark]')")


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_java() is None, reason="Spark needs a Java runtime (apt-get install openjdk-17-jre-headless)"),
]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers must run this environment's Python
    session = (SparkSession.builder.master("local[2]").appName("omics-risk-test")
               .config("spark.driver.memory", "512m")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4")  # several Arrow batches per partition
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_udf_scores_match_the_local_batch_path(demo: SimpleNamespace, problem_cohort: SimpleNamespace,
                                                     spark, tmp_path: Path) -> None:
    from pyspark.sql import functions as F

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score_cohort(demo.uri, problem_cohort.root, tmp_path / "local.parquet", features_dir=problem_cohort.features,
                     progress=False, workers=2, chunk_size=5)
    local = pd.read_parquet(tmp_path / "local.parquet").set_index("patient_id")
    bm = load_batch_model(demo.uri)
    table = write_feature_table(bm, problem_cohort.root, tmp_path / "features.parquet",
                                features_dir=problem_cohort.features, work_dir=tmp_path / ".work", progress=False)

    result_type = spark_result_type(bm)
    assert result_type == ("patient_id string, risk_score double, surv_365d double, surv_730d double, "
                           "surv_1095d double, modalities_used string")
    df = spark.read.parquet(str(table))
    udf = mlflow.pyfunc.spark_udf(spark, demo.uri, result_type=result_type, env_manager="local")
    scored = df.select(udf(F.struct(*[F.col(f"`{c}`") for c in df.columns])).alias("s")).select("s.*").toPandas()
    scored = scored.set_index("patient_id").sort_index()

    usable = local[local["status"] != "failed"]
    assert sorted(scored.index) == sorted(usable.index)  # every patient with clinical data, nobody else
    cols = ["risk_score", "surv_365d", "surv_730d", "surv_1095d"]
    np.testing.assert_allclose(scored[cols].to_numpy(), usable.loc[scored.index, cols].to_numpy(), rtol=0, atol=1e-6)
    assert (scored["modalities_used"] == usable.loc[scored.index, "modalities_used"]).all()
