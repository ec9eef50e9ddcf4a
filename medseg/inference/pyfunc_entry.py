"""The models-from-code entry point of a medseg MLflow model.

``mlflow.pyfunc.load_model`` runs this file (copied into the model folder) instead of unpickling
a Python object: loading a medseg model executes medseg's own installed code, never pickled code.
"""

from mlflow.models import set_model

from medseg.inference.pyfunc import MedsegModel

set_model(MedsegModel())
