from django import forms

from alignment.labels import DIMENSION_TITLES
from annotate.models import Judgment

SCREEN = [("left", "left"), ("tie", "tie"), ("right", "right")]


class JudgeForm(forms.Form):
    vq = forms.ChoiceField(choices=SCREEN, label=DIMENSION_TITLES["vq"])
    mq = forms.ChoiceField(choices=SCREEN, label=DIMENSION_TITLES["mq"])
    ta = forms.ChoiceField(choices=SCREEN, label=DIMENSION_TITLES["ta"])
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    flag = forms.ChoiceField(required=False, choices=Judgment.Flag.choices)
    duration_ms = forms.IntegerField(required=False, min_value=0, max_value=86_400_000)
    watched_ms = forms.IntegerField(required=False, min_value=0, max_value=86_400_000)
    active_ms = forms.IntegerField(required=False, min_value=0, max_value=86_400_000)


class SkipForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500)
