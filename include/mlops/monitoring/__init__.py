"""After deployment: drift against the training reference, labelled performance, and the retraining requests they raise."""
