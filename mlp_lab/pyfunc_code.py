"""What MLflow runs to build a run's model (an MLflow model from code): see :mod:`mlp_lab.pyfunc_model`."""

from mlflow.models import set_model

from mlp_lab.pyfunc_model import DigitClassifier

set_model(DigitClassifier())
