"""Metrics edge: offline sample metrics for the built-in digits, with no download.

A small conv-net digit classifier trained locally on the digits training split (`digit_classifier`, cached after
the first call) gives the class accuracy of class-conditional samples and the Fréchet distance between Gaussian fits
of its penultimate-layer features (the digits analogue of FID). It uses the data edge; the pure core never imports
it.
"""

from ._metrics import (
    CLASSIFIER_VERSION as CLASSIFIER_VERSION,
    NUM_FEATURES as NUM_FEATURES,
    DigitClassifier as DigitClassifier,
    class_accuracy as class_accuracy,
    classifier_features as classifier_features,
    digit_classifier as digit_classifier,
    feature_statistics as feature_statistics,
    frechet_distance as frechet_distance,
    frechet_feature_distance as frechet_feature_distance,
    predict_classes as predict_classes,
    train_digit_classifier as train_digit_classifier,
)
