from .classifier import (
    CLASSIFIER_VERSION as CLASSIFIER_VERSION,
    NUM_FEATURES as NUM_FEATURES,
    DigitClassifier as DigitClassifier,
    digit_classifier as digit_classifier,
    train_digit_classifier as train_digit_classifier,
)
from .frechet import (
    class_accuracy as class_accuracy,
    classifier_features as classifier_features,
    feature_statistics as feature_statistics,
    frechet_distance as frechet_distance,
    frechet_feature_distance as frechet_feature_distance,
    predict_classes as predict_classes,
)
