"""The code of a run's logged model, which MLflow runs to load it ("models from code": nothing
is unpickled). Not imported by peftlab itself."""

from mlflow.models import set_model

from peftlab.logged_model import TunedLanguageModel

set_model(TunedLanguageModel())
