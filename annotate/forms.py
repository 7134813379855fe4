from django import forms

from annotate.models import Judgment

SCREEN = [("left", "left"), ("tie", "tie"), ("right", "right")]


class JudgeForm(forms.Form):
    vq = forms.ChoiceField(choices=SCREEN, label="Visual quality")
    mq = forms.ChoiceField(choices=SCREEN, label="Motion quality")
    ta = forms.ChoiceField(choices=SCREEN, label="Text alignment")
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    flag = forms.ChoiceField(required=False, choices=Judgment.Flag.choices)
    duration_ms = forms.IntegerField(required=False, min_value=0, max_value=86_400_000)
    watched_ms = forms.IntegerField(required=False, min_value=0, max_value=86_400_000)


class SkipForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500)
