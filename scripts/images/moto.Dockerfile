# The AWS emulator (moto) for the container tests, installed offline from wheels that
# scripts/images.sh built on the host: no package index is reached from inside the image.
ARG BASE_IMAGE=sluice-debian:bookworm
FROM ${BASE_IMAGE}
ARG MOTO_VERSION
COPY . /wheels/
RUN python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --quiet --no-index --find-links /wheels "moto[server]==${MOTO_VERSION}" \
 && rm -rf /wheels
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
