"""The v2 ("future") dialect: /notifications/api/v1/future/… and the order chain it creates."""
