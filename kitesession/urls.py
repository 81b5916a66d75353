from django.urls import path

from kitesession import views

urlpatterns = [
    path("login/", views.kite_login, name="kite-login"),
    path("callback/", views.kite_callback, name="kite-callback"),
    path("status/", views.kite_status, name="kite-status"),
]
