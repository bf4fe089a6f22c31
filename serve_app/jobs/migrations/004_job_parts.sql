-- The text of each finished piece of a running job (its events stream's partial texts),
-- written with its progress a few times a minute, never once per piece.
CREATE TABLE transcription_job_parts (
    job_id         uuid NOT NULL REFERENCES transcription_jobs (id) ON DELETE CASCADE,
    seq            integer NOT NULL,
    start_seconds  double precision NOT NULL,
    end_seconds    double precision NOT NULL,
    text           text NOT NULL,
    PRIMARY KEY (job_id, seq)
);
